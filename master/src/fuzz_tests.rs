//! Fuzzing every decoder of untrusted input (issue 13): MQTT payloads and
//! packets, work units, gRPC messages and their fields, REST bodies,
//! Socket.IO payloads, Stratum lines. Each takes arbitrary bytes, strings
//! or JSON built by proptest and must return — a value or an error — without
//! panicking; lengths are bounded by the generators, and the MQTT reader by
//! its packet limit. Run with every `cargo test` ([`CASES`] inputs a target).
#![allow(clippy::expect_used)]

use bytes::BytesMut;
use faena_common::broker::MAX_PACKET_BYTES;
use faena_proto::ai::AiParams;
use faena_proto::grpc as pb;
use faena_proto::ids::{FencingToken, InstanceId, JobId, WorkerId};
use faena_proto::jobs::{JobKind, JobSpec};
use faena_proto::mine::parse_target;
use faena_proto::mqtt::{Control, LogLine, MasterStatus, Payload, WorkUnit, WorkerStatus};
use faena_proto::{sio, stratum};
use proptest::prelude::*;
use prost::Message;
use serde_json::Value;

/// Inputs per target and run.
const CASES: u32 = 4096;

fn config() -> ProptestConfig {
    ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() }
}

/// Arbitrary JSON: scalars, strings with odd characters, nested arrays and
/// objects whose keys are often the contract's own (so decoders get past
/// their first field).
fn json() -> impl Strategy<Value = Value> {
    let keys = prop_oneof![
        Just("v".to_owned()),
        Just("kind".to_owned()),
        Just("params".to_owned()),
        Just("prompt".to_owned()),
        Just("key".to_owned()),
        Just("blob".to_owned()),
        Just("difficulty".to_owned()),
        Just("nonce_count".to_owned()),
        Just("job_id".to_owned()),
        Just("id".to_owned()),
        Just("method".to_owned()),
        Just("shares".to_owned()),
        "[a-z_]{1,12}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,64}".prop_map(Value::String),
        "[0-9a-f]{0,160}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(keys.clone(), inner, 0..8).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..2048)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn mqtt_payloads(raw in bytes(), value in json()) {
        let versioned = match value.clone() {
            Value::Object(mut m) => {
                m.insert("v".into(), Value::from(1));
                serde_json::to_vec(&Value::Object(m)).expect("JSON")
            }
            other => serde_json::to_vec(&other).expect("JSON"),
        };
        let (client, _el) = rumqttc::AsyncClient::new(rumqttc::MqttOptions::new("fuzz", "127.0.0.1", 1), 1);
        let dynsec = crate::broker::dynsec::Dynsec::new(
            client,
            faena_proto::topics::Topics::default(),
            tokio::sync::watch::channel(false).1,
        );
        for input in [&raw, &versioned] {
            let _ = dynsec.on_answer(input);
            let _ = WorkUnit::decode(input);
            let _ = Control::decode(input);
            let _ = WorkerStatus::decode(input);
            let _ = MasterStatus::decode(input);
            let _ = LogLine::decode(input);
        }
    }

    #[test]
    fn work_unit_and_rest_params(value in json(), kind in "[a-z.]{0,16}") {
        for k in JobKind::ALL {
            if let Ok(JobSpec::RandomxMine(p)) = JobSpec::parse_kind(k, value.clone()) {
                let _ = p.work();
                let _ = p.check_share_cost();
            }
        }
        let _ = JobSpec::parse(&kind, value.clone());
        if let Ok(p) = serde_json::from_value::<AiParams>(value) {
            let _ = p.validate();
            let _ = p.cache_key();
        }
    }

    #[test]
    fn mqtt_packets_at_the_broker_guard(raw in bytes()) {
        // What the guard reads from a client: framing, then the packet.
        if let Ok(header) = rumqttc::mqttbytes::check(raw.iter(), MAX_PACKET_BYTES) {
            let frame = &raw[..header.frame_length().min(raw.len())];
            let _ = rumqttc::mqttbytes::v4::Packet::read(&mut BytesMut::from(frame), MAX_PACKET_BYTES);
        }
        let _ = rumqttc::mqttbytes::v4::Packet::read(&mut BytesMut::from(&raw[..]), MAX_PACKET_BYTES);
    }

    #[test]
    fn grpc_messages_and_their_fields(raw in bytes(), text in ".{0,200}") {
        let _ = pb::RegisterRequest::decode(&raw[..]);
        let _ = pb::BrokerLoginRequest::decode(&raw[..]);
        let _ = pb::HeartbeatRequest::decode(&raw[..]);
        let _ = pb::ProgressRequest::decode(&raw[..]);
        let _ = pb::ResultRequest::decode(&raw[..]);
        let _ = WorkerId::parse(&text);
        let _ = text.parse::<InstanceId>();
        let _ = text.parse::<JobId>();
        let _ = FencingToken::parse(&text);
        let _ = JobKind::parse(&text);
        let _ = faena_proto::ai::Provider::parse(&text);
    }

    #[test]
    fn socket_io_payloads(value in json()) {
        let _ = serde_json::from_value::<sio::Hello>(value.clone());
        let _ = serde_json::from_value::<sio::Ask>(value.clone());
        let _ = serde_json::from_value::<sio::SetKey>(value.clone());
        let _ = serde_json::from_value::<sio::HashText>(value.clone());
        let _ = serde_json::from_value::<sio::Mine>(value.clone());
        let _ = serde_json::from_value::<sio::JobRef>(value);
    }

    #[test]
    fn stratum_lines(line in ".{0,300}", value in json()) {
        let _ = serde_json::from_str::<stratum::Incoming>(&line);
        let _ = stratum::parse_nonce(&line);
        let _ = parse_target(&line);
        let _ = serde_json::from_value::<stratum::LoginParams>(value.clone());
        let _ = serde_json::from_value::<stratum::SubmitParams>(value.clone());
        if let Ok(i) = serde_json::from_value::<stratum::Incoming>(value) {
            let _ = serde_json::from_value::<stratum::SubmitParams>(i.params);
        }
    }
}
