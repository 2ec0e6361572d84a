//! Connecting to the MQTT broker: URL parsing, client options, and the event
//! loop that reconnects with backoff. Bad credentials on the first connect are
//! fatal (a clear start-up error); any later loss is retried forever.

use std::str::FromStr;
use std::time::Duration;

use faena_proto::secret::Secret;
use rumqttc::{ConnectReturnCode, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet};
use tokio_util::sync::CancellationToken;

/// Largest MQTT packet either side accepts.
pub const MAX_PACKET_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("invalid broker URL {0:?} (expected mqtt://host:port or mqtts://host:port)")]
    Url(String),
    #[error("the MQTT broker refused the connection: {0} (check FAENA_MQTT_USERNAME / FAENA_MQTT_PASSWORD)")]
    Refused(&'static str),
    #[error("TLS with the MQTT broker failed: {0} (check FAENA_TLS_CA_FILE and the broker's certificate)")]
    Tls(String),
    #[error(transparent)]
    TlsConfig(#[from] crate::tls::TlsError),
}

/// `mqtt://host:port` (or `tcp://`, or bare `host:port`; port 1883 by
/// default), or `mqtts://host:port` (or `ssl://`; TLS, port 8883 by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl FromStr for BrokerUrl {
    type Err = BrokerError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || BrokerError::Url(s.to_owned());
        let (tls, rest) = match s.strip_prefix("mqtts://").or_else(|| s.strip_prefix("ssl://")) {
            Some(rest) => (true, rest),
            None => (false, s.strip_prefix("mqtt://").or_else(|| s.strip_prefix("tcp://")).unwrap_or(s)),
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().map_err(|_| err())?),
            None => (rest, if tls { 8883 } else { 1883 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains(['/', '@', ' ']) {
            return Err(err());
        }
        Ok(Self { host: host.to_owned(), port, tls })
    }
}

impl std::fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

#[derive(Debug, Clone)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
}

/// An account on the master's embedded broker: its password is derived
/// from the cluster token (HMAC-SHA256 of the account name), so the master
/// checks it without keeping any more secrets, and hands it to a worker
/// that asks (`BrokerLogin`). `username` is a worker's account
/// (`WorkerId::broker_account`), or [`MASTER_CLIENT_ID`] for the master's own.
pub fn embedded_credentials(cluster_token: &Secret, username: &str) -> Credentials {
    use ring::hmac;
    let key = hmac::Key::new(hmac::HMAC_SHA256, cluster_token.expose().as_bytes());
    let tag = hmac::sign(&key, format!("faena-mqtt:{username}").as_bytes());
    let password = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect::<String>();
    Credentials { username: username.to_owned(), password: Secret::new(password) }
}

/// Where a client connects and how it logs in.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint<'a> {
    pub url: &'a BrokerUrl,
    pub creds: Option<&'a Credentials>,
    pub tls: &'a crate::tls::TlsArgs,
}

/// The master's MQTT client id. A worker's client id is its worker id, so a
/// broker ACL can confine each worker to its own topics (Mosquitto's `%c`
/// must fill a whole topic level); no worker may take this one.
pub const MASTER_CLIENT_ID: &str = "faena-master";

/// Client options shared by master and worker. Persistent sessions
/// (`clean_session = false`) let the broker keep QoS 1 units for a
/// reconnecting client. An `mqtts://` URL connects over TLS, trusting
/// what `tls` says (see [`crate::tls`]).
pub fn options(client_id: &str, at: Endpoint<'_>, will: Option<LastWill>) -> Result<MqttOptions, crate::tls::TlsError> {
    let mut o = MqttOptions::new(client_id, at.url.host.clone(), at.url.port);
    if at.url.tls {
        o.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(
            at.tls.client_config()?,
        )));
    }
    o.set_keep_alive(Duration::from_secs(5));
    o.set_clean_session(false);
    o.set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
    o.set_inflight(1000);
    o.set_request_channel_capacity(65_536);
    if let Some(c) = at.creds {
        o.set_credentials(c.username.clone(), c.password.expose());
    }
    if let Some(w) = will {
        o.set_last_will(w);
    }
    Ok(o)
}

fn refusal(code: ConnectReturnCode) -> &'static str {
    match code {
        ConnectReturnCode::BadUserNamePassword => "bad user name or password",
        ConnectReturnCode::NotAuthorized => "not authorised",
        ConnectReturnCode::BadClientId => "client id rejected",
        ConnectReturnCode::RefusedProtocolVersion => "protocol version refused",
        ConnectReturnCode::ServiceUnavailable => "service unavailable",
        ConnectReturnCode::Success => "success",
    }
}

/// A client with Nagle's algorithm off: work units and acks are small and
/// latency-bound, and delayed ACKs would otherwise stall them for 40 ms.
pub fn client(options: MqttOptions, capacity: usize) -> (rumqttc::AsyncClient, EventLoop) {
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, capacity);
    let mut network = eventloop.network_options();
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
    (client, eventloop)
}

/// Asks for a new broker login when the broker refuses the current one
/// (see [`drive`]); None when there is none to be had (shutting down).
pub type Relogin =
    Box<dyn FnMut() -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<Credentials>> + Send>> + Send>;

/// How long a broker that was never reached may take to listen before its
/// absence is a warning.
const STARTING_BROKER_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Polls the event loop until `cancel`, handing every event to `on_event`.
/// `on_event` must not block: it runs on the loop that keeps the connection alive.
/// A deliberate `disconnect()` ends the loop. A refused login ends it too
/// when it happens before the first connection, unless `relogin` can get a
/// new one (a worker's account handed out by the master, which a restarted
/// broker may have forgotten): then the loop logs in again with that.
pub async fn drive(
    mut el: EventLoop,
    cancel: CancellationToken,
    mut on_event: impl FnMut(Event),
    mut relogin: Option<Relogin>,
) -> Result<(), BrokerError> {
    let mut connected_once = false;
    // Whether the current login is a fresh one from `relogin`.
    let mut relogged = false;
    let mut backoff = crate::retry::Policy::RECONNECT.start();
    let started = tokio::time::Instant::now();
    loop {
        let polled = tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            polled = el.poll() => polled,
        };
        match polled {
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return Ok(()),
            Ok(event) => {
                if let Event::Incoming(Packet::ConnAck(_)) = &event {
                    if connected_once {
                        tracing::info!("reconnected to the broker");
                    }
                    connected_once = true;
                    relogged = false;
                    backoff.reset();
                }
                on_event(event);
            }
            Err(ConnectionError::ConnectionRefused(
                code @ (ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized),
            )) if relogin.is_some() => {
                tracing::warn!(
                    reason = refusal(code),
                    "the broker refused this login; asking the master for a new one"
                );
                // A fresh login is tried at once; one refused again waits
                // (the broker's accounts are not what the master thinks).
                if relogged {
                    let wait = backoff.wait();
                    tokio::select! {
                        () = cancel.cancelled() => return Ok(()),
                        () = tokio::time::sleep(wait) => {}
                    }
                }
                let fresh = relogin.as_mut().map(|r| r());
                let fresh = tokio::select! {
                    () = cancel.cancelled() => return Ok(()),
                    fresh = async move { match fresh { Some(f) => f.await, None => None } } => fresh,
                };
                let Some(c) = fresh else { return Ok(()) };
                el.mqtt_options.set_credentials(c.username, c.password.expose());
                relogged = true;
            }
            Err(ConnectionError::ConnectionRefused(
                code @ (ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized),
            )) if !connected_once => return Err(BrokerError::Refused(refusal(code))),
            Err(ConnectionError::Tls(e)) if !connected_once => return Err(BrokerError::Tls(e.to_string())),
            Err(e) => {
                let wait = backoff.wait();
                let retry_in_ms = wait.as_millis() as u64;
                // A broker starting beside this process (the embedded one a
                // moment after the master, Mosquitto in the same deploy) is
                // routine for a while; a lost connection never is.
                if crate::lifecycle::is_stopping() {
                    // Its broker may stop first (dev.sh's master): part of the stop.
                    tracing::info!(error = %e, retry_in_ms, "broker connection lost while stopping");
                } else if connected_once {
                    tracing::warn!(error = %e, retry_in_ms, "broker connection lost");
                } else if started.elapsed() < STARTING_BROKER_GRACE {
                    tracing::info!(error = %e, retry_in_ms, "waiting for the broker to listen");
                } else {
                    tracing::warn!(error = %e, retry_in_ms, "cannot reach the broker");
                }
                tokio::select! {
                    () = cancel.cancelled() => return Ok(()),
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_broker_urls() {
        let u: BrokerUrl = "mqtt://broker:1884".parse().expect("valid");
        assert_eq!((u.host.as_str(), u.port, u.tls), ("broker", 1884, false));
        let s: BrokerUrl = "mqtts://mosquitto".parse().expect("valid");
        assert_eq!((s.host.as_str(), s.port, s.tls), ("mosquitto", 8883, true));
        assert_eq!(s.to_string(), "mqtts://mosquitto:8883");
        assert_eq!("ssl://h:1".parse::<BrokerUrl>().map(|u| u.tls).ok(), Some(true));
        assert_eq!("127.0.0.1".parse::<BrokerUrl>().map(|u| u.port).ok(), Some(1883));
        assert_eq!("tcp://[::1]:99".parse::<BrokerUrl>().map(|u| u.host).ok().as_deref(), Some("::1"));
        for bad in ["", "mqtt://", "mqtt://h:notaport", "mqtt://user@h:1", "mqtt://h:70000"] {
            assert!(bad.parse::<BrokerUrl>().is_err(), "{bad:?} accepted");
        }
    }
}
