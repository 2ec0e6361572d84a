//! The master's in-process way into its embedded broker, for what it sends
//! workers (work units and control messages).
//!
//! Over its TCP connection a unit would wake the MQTT client's task, cross
//! loopback and wake rumqttd's network thread before reaching its router;
//! through rumqttd's local link it goes from the caller (the store writer's
//! commit callback) to the router's channel at once. Workers get it as
//! before: rumqttd delivers at the QoS each subscriber asked for (1),
//! whatever the QoS it was published with, and nothing is lost between the
//! master and a router in the same process. A message on a topic nobody
//! subscribes to goes nowhere, as over the connection.

use parking_lot::Mutex;
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::protocol::Packet;

/// A message the router's channel did not take (it is full, or the router
/// is gone): it did not go out.
#[derive(Debug, thiserror::Error)]
#[error("the embedded broker's router did not take it: {0}")]
pub struct Refused(String);

/// What the master publishes through the link.
pub struct Direct {
    tx: Mutex<LinkTx>,
    /// Held so the router keeps the link; it subscribes to nothing and
    /// publishes at QoS 0, so the router sends it nothing to read.
    _rx: LinkRx,
}

impl std::fmt::Debug for Direct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Direct").finish_non_exhaustive()
    }
}

impl Direct {
    pub fn new((tx, rx): (LinkTx, LinkRx)) -> Self {
        Self { tx: Mutex::new(tx), _rx: rx }
    }

    /// Hands `payload` on `topic` to the router without waiting; an error
    /// when its channel did not take it and the message did not go out.
    pub fn publish(&self, topic: String, payload: Vec<u8>) -> Result<(), Refused> {
        let mut tx = self.tx.lock();
        match tx.try_publish(topic.clone(), payload) {
            Ok(_) => Ok(()),
            Err(e) => {
                // The publish is in the link's buffer but the router was not
                // told. Only this link writes there, under this lock: if it
                // is still the last packet, take it back; if it is gone, the
                // router took it with earlier ones and it goes out.
                let mut buffer = tx.buffer();
                match buffer.back() {
                    Some(Packet::Publish(p, _)) if p.topic.as_ref() == topic.as_bytes() => {
                        buffer.pop_back();
                        Err(Refused(e.to_string()))
                    }
                    _ => Ok(()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use faena_common::broker::Credentials;
    use faena_proto::secret::Secret;
    use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet as Incoming, QoS as ClientQoS};

    use super::*;

    const JOBS: &str = "faena/workers/w1/jobs";

    /// rumqttd with the link, and a client subscribed to [`JOBS`] at QoS 1.
    async fn broker_and_subscriber() -> (Direct, EventLoop, AsyncClient) {
        let login = Credentials { username: "test".into(), password: Secret::new("secret".to_owned()) };
        let (addr, link) = super::super::start_rumqttd(([127, 0, 0, 1], 0).into(), &login).expect("rumqttd");
        let mut options = MqttOptions::new("w1", addr.ip().to_string(), addr.port());
        options.set_credentials(login.username.clone(), login.password.expose());
        let (client, mut events) = AsyncClient::new(options, 16);
        client.subscribe(JOBS, ClientQoS::AtLeastOnce).await.expect("subscribe");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(deadline, events.poll()).await.expect("subscribed in time") {
                Ok(Event::Incoming(Incoming::SubAck(_))) => break,
                Ok(_) => {}
                // rumqttd listens a moment after it starts: try again.
                Err(_) => tokio::task::yield_now().await,
            }
        }
        (Direct::new(link), events, client)
    }

    /// The next `n` payloads on [`JOBS`], each checked to come at QoS 1.
    async fn received(events: &mut EventLoop, n: usize) -> Vec<String> {
        let mut got = Vec::new();
        while got.len() < n {
            let event = tokio::time::timeout(Duration::from_secs(10), events.poll()).await.expect("in time");
            if let Ok(Event::Incoming(Incoming::Publish(p))) = event {
                assert_eq!(p.topic, JOBS);
                assert_eq!(p.qos, ClientQoS::AtLeastOnce, "delivered at the QoS the worker asked for");
                got.push(String::from_utf8_lossy(&p.payload).into_owned());
            }
        }
        got
    }

    #[tokio::test]
    async fn what_goes_through_the_link_reaches_subscribers_at_their_qos_in_order() {
        let (direct, mut events, _client) = broker_and_subscriber().await;
        // Nobody ever subscribed here: it goes nowhere, and the link stays.
        direct.publish("faena/workers/gone/jobs".into(), b"nobody".to_vec()).expect("handed to the router");
        for i in 0..3 {
            direct.publish(JOBS.into(), format!("unit {i}").into_bytes()).expect("handed to the router");
        }
        assert_eq!(received(&mut events, 3).await, ["unit 0", "unit 1", "unit 2"]);
    }
}
