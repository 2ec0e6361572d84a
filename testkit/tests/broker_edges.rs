//! The embedded broker's guard against hostile clients, over raw MQTT on
//! real sockets (rumqttd behind the guard): clients are capped, a client
//! without an account cannot make the guard buffer a large partial packet,
//! a subscription that can deliver nothing readable is refused, and a flood
//! of refused publishes is logged once.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use bytes::BytesMut;
use faena_testkit::{Cluster, MasterOpts, WAIT};
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Connect, Packet, Publish, Subscribe, SubscribeReasonCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn opts(extra: &[(&str, &str)]) -> MasterOpts {
    MasterOpts { extra: extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(), ..Default::default() }
}

fn broker_addr(c: &Cluster) -> String {
    c.addrs.mqtt.trim_start_matches("mqtt://").to_owned()
}

fn encode(p: Packet) -> Vec<u8> {
    let mut buf = BytesMut::new();
    match p {
        Packet::Connect(c) => c.write(&mut buf),
        Packet::Subscribe(s) => s.write(&mut buf),
        Packet::Publish(p) => p.write(&mut buf),
        other => panic!("not encoded here: {other:?}"),
    }
    .expect("encodes");
    buf.to_vec()
}

/// A raw client: connects anonymously (an observer) and reads packets.
struct Raw {
    tcp: TcpStream,
    buf: BytesMut,
}

impl Raw {
    async fn connect(addr: &str, id: &str) -> Self {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(&encode(Packet::Connect(Connect::new(id)))).await.expect("CONNECT");
        Self { tcp, buf: BytesMut::new() }
    }

    /// The next packet; None when the other side closed.
    async fn read(&mut self) -> Option<Packet> {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Ok(p) = Packet::read(&mut self.buf, 1 << 20) {
                    return Some(p);
                }
                match self.tcp.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("the broker answered in time")
    }
}

#[tokio::test]
async fn the_guard_bounds_what_hostile_clients_cost() {
    let c = Cluster::start(opts(&[("FAENA_MQTT_MAX_OBSERVERS", "3")])).await;
    let addr = broker_addr(&c);

    // Observers are capped: the fourth is refused with "server unavailable".
    let mut kept = Vec::new();
    for n in 0..3 {
        let mut o = Raw::connect(&addr, &format!("obs-{n}")).await;
        assert!(matches!(o.read().await, Some(Packet::ConnAck(a)) if a.code == rumqttc::ConnectReturnCode::Success));
        kept.push(o);
    }
    let mut over = Raw::connect(&addr, "obs-over").await;
    match over.read().await {
        Some(Packet::ConnAck(a)) => assert_eq!(a.code, rumqttc::ConnectReturnCode::ServiceUnavailable),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(over.read().await.is_none(), "and closed");

    // A subscription that can deliver nothing an observer may read is refused.
    let o = &mut kept[0];
    let sub = Subscribe::new("faena/workers/w1/jobs", QoS::AtLeastOnce);
    o.tcp.write_all(&encode(Packet::Subscribe(sub))).await.expect("SUBSCRIBE");
    match o.read().await {
        Some(Packet::SubAck(a)) => assert_eq!(a.return_codes, vec![SubscribeReasonCode::Failure]),
        other => panic!("expected a SUBACK, got {other:?}"),
    }
    let sub = Subscribe::new("faena/#", QoS::AtLeastOnce);
    o.tcp.write_all(&encode(Packet::Subscribe(sub))).await.expect("SUBSCRIBE");
    let granted = loop {
        match o.read().await {
            Some(Packet::SubAck(a)) => break a,
            Some(_) => continue,
            None => panic!("closed"),
        }
    };
    assert!(matches!(granted.return_codes[..], [SubscribeReasonCode::Success(_)]), "status and logs: {granted:?}");
    // Mixed: the refused filter fails, the other is granted, in order.
    let mut mixed = Subscribe::new("faena/workers/w1/jobs", QoS::AtLeastOnce);
    mixed.add("faena/logs".into(), QoS::AtMostOnce);
    mixed.pkid = 7;
    o.tcp.write_all(&encode(Packet::Subscribe(mixed))).await.expect("SUBSCRIBE");
    let answer = loop {
        match o.read().await {
            Some(Packet::SubAck(a)) if a.pkid == 7 => break a,
            Some(_) => continue,
            None => panic!("closed"),
        }
    };
    assert!(
        matches!(answer.return_codes[..], [SubscribeReasonCode::Failure, SubscribeReasonCode::Success(_)]),
        "{answer:?}"
    );

    // A flood of refused publishes is logged once, not once each.
    let o = &mut kept[1];
    for n in 0..200u16 {
        let mut p = Publish::new("faena/workers/w1/control", QoS::AtMostOnce, format!("junk {n}"));
        p.pkid = 0;
        o.tcp.write_all(&encode(Packet::Publish(p))).await.expect("PUBLISH");
    }
    // The connection is still served (a ping-like round trip: a subscription).
    let sub = Subscribe::new("faena/logs", QoS::AtMostOnce);
    o.tcp.write_all(&encode(Packet::Subscribe(sub))).await.expect("SUBSCRIBE");
    while !matches!(o.read().await.expect("open"), Packet::SubAck(_)) {}
    let log = c.master_log();
    assert_eq!(log.matches("MQTT publish refused by the ACL").count(), 1, "logged once per connection");

    // A packet header claiming 8 MiB from a client without an account: the
    // connection is closed at once, nothing buffered.
    let o = &mut kept[2];
    let mut header = vec![0x30u8];
    let mut len = 8 * 1024 * 1024 - 16;
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        header.push(byte);
        if len == 0 {
            break;
        }
    }
    header.extend_from_slice(&[0u8; 1024]);
    let _ = o.tcp.write_all(&header).await;
    while o.read().await.is_some() {}
}
