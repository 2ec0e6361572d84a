//! The embedded MQTT broker (rumqttd) used when no `--mqtt-url` is given.
//!
//! It listens where it is told (loopback by default) and lets clients in
//! without a password, so `mosquitto_sub -h 127.0.0.1 -t 'faena/#' -v`
//! works out of the box; the gRPC side still needs the cluster token.
//! rumqttd has no shutdown API: it lives as long as the process.

use std::collections::HashMap;
use std::net::SocketAddr;

use faena_common::broker::MAX_PACKET_BYTES;
use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedBrokerError {
    #[error(
        "cannot listen for MQTT on {addr}: {source} (set FAENA_MQTT_ADDR, or FAENA_MQTT_URL for an external broker)"
    )]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot start the embedded broker's thread: {0}")]
    Start(#[source] std::io::Error),
}

/// Starts the broker; returns the address it listens on (port 0 picks one).
pub fn start(addr: SocketAddr) -> Result<SocketAddr, EmbeddedBrokerError> {
    // Binding first turns "address in use" into a clear error and resolves port 0;
    // rumqttd re-binds the same address right after (it sets SO_REUSEADDR).
    let probe = std::net::TcpListener::bind(addr).map_err(|source| EmbeddedBrokerError::Bind { addr, source })?;
    let addr = probe.local_addr().map_err(|source| EmbeddedBrokerError::Bind { addr, source })?;
    drop(probe);

    let connections = ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: MAX_PACKET_BYTES,
        max_inflight_count: 1000,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server =
        ServerSettings { name: "faena-v4".into(), listen: addr, tls: None, next_connection_delay_ms: 0, connections };
    let router = RouterConfig {
        max_connections: 10_000,
        max_outgoing_packet_count: 1000,
        max_segment_size: 64 * 1024 * 1024,
        max_segment_count: 10,
        custom_segment: None,
        initialized_filters: None,
        shared_subscriptions_strategy: Default::default(),
    };
    let config = Config {
        id: 0,
        router,
        v4: Some(HashMap::from([("1".to_owned(), server)])),
        v5: None,
        ws: None,
        cluster: None,
        console: None,
        bridge: None,
        prometheus: None,
        metrics: None,
    };
    let mut broker = Broker::new(config);
    std::thread::Builder::new()
        .name("faena-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded broker stopped");
            }
        })
        .map_err(EmbeddedBrokerError::Start)?;
    Ok(addr)
}
