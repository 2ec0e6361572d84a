//! Logging: human-readable (or JSON) lines on stderr, and every INFO-or-worse
//! event also as one JSON object on the MQTT logs topic, so
//! `mosquitto_sub -t 'faena/logs'` follows the whole cluster.
//!
//! The MQTT side never blocks the program: events go through a bounded channel
//! and are dropped when it is full. Events from the MQTT and HTTP libraries
//! themselves are not forwarded (that would feed back into the broker).

use faena_proto::mqtt::{LogLine, Payload, now_ms};
use rumqttc::{AsyncClient, QoS};
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

const QUIET_TARGETS: [&str; 7] = ["rumqttc", "rumqttd", "h2", "hyper", "tower", "tonic", "reqwest"];
const DEFAULT_FILTER: &str = "info,rumqttd=warn,rumqttc=warn,h2=warn,hyper=warn,tower=warn";

/// The installed filter, changed live by [`set_filter`], and what it started as.
static FILTER: std::sync::OnceLock<(reload::Handle<EnvFilter, Registry>, String)> = std::sync::OnceLock::new();

/// Log events waiting to be published on the logs topic.
#[derive(Debug)]
pub struct LogSink {
    rx: mpsc::Receiver<LogLine>,
}

/// Installs the global subscriber. `FAENA_LOG` overrides the filter
/// (`EnvFilter` syntax); `json` switches stderr to JSON lines.
pub fn init(component: &str, json: bool) -> LogSink {
    let (tx, rx) = mpsc::channel(4096);
    let from_env = std::env::var("FAENA_LOG").ok().filter(|f| EnvFilter::try_new(f).is_ok());
    let directives = from_env.unwrap_or_else(|| DEFAULT_FILTER.to_owned());
    let (filter, handle) = reload::Layer::new(EnvFilter::new(&directives));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let stderr = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_target(false).with_ansi(ansi);
    let stderr = if json { stderr.json().boxed() } else { stderr.compact().boxed() };
    let mqtt = MqttLayer { tx, component: component.to_owned() };
    // A second init (tests running several components in one process) keeps the first.
    let subscriber = tracing_subscriber::registry().with(filter).with(stderr).with(mqtt).with(Routine);
    if subscriber.try_init().is_ok() {
        let _ = FILTER.set((handle, directives));
    }
    LogSink { rx }
}

/// Changes the log filter of this process live (`EnvFilter` syntax); `None`
/// goes back to the one it started with. A bare level (`debug`) keeps the
/// network libraries at `warn`, as the default does.
pub fn set_filter(directives: Option<&str>) -> Result<(), String> {
    let (handle, start) = FILTER.get().ok_or("this process did not set up its logging through faena")?;
    let directives = match directives {
        None => start.clone(),
        Some(d) if d.contains('=') => d.to_owned(),
        Some(level) => format!("{level},{}", QUIET_TARGETS.map(|t| format!("{t}=warn")).join(",")),
    };
    let filter = EnvFilter::try_new(&directives).map_err(|e| format!("{directives:?}: {e}"))?;
    handle.reload(filter).map_err(|e| e.to_string())
}

/// Publishes queued log events (QoS 0) until cancelled.
pub async fn forward(mut sink: LogSink, client: AsyncClient, topic: String, cancel: CancellationToken) {
    loop {
        let line = tokio::select! {
            () = cancel.cancelled() => return,
            line = sink.rx.recv() => match line { Some(l) => l, None => return },
        };
        // A full request queue means the broker is away: drop rather than block.
        let _ = client.try_publish(topic.clone(), QoS::AtMostOnce, false, line.encode());
    }
}

/// What rumqttd logs at ERROR that is routine: what follows a client's
/// DISCONNECT, as every client sends on a clean stop (the master's own
/// connection to the embedded broker among them). The router drops the
/// connection, so its link says `router-drop`; the socket's close is then a
/// second disconnect, `no-connection id N is already gone` (rumqttd's own
/// comment calls that expected). ERROR is kept for what an operator must
/// look at, so these are left out; a broker that really goes away shows as
/// this process's own "broker connection lost". (tracing dispatches nothing
/// from inside a dispatch, so they cannot be passed on at a lower level.)
const ROUTINE_BROKER_ERRORS: [&str; 2] = ["is already gone", "router-drop"];

/// Leaves out [`ROUTINE_BROKER_ERRORS`], and every rumqttd ERROR once the
/// process is stopping ([`crate::lifecycle::is_stopping`]): its connections
/// then close in whatever order the process exits in (a reset socket, a
/// link whose router went first), and nothing rumqttd says is for an operator.
struct Routine;

impl<S: Subscriber> Layer<S> for Routine {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        let meta = event.metadata();
        if *meta.level() != Level::ERROR || !meta.target().starts_with("rumqttd") {
            return true;
        }
        if crate::lifecycle::is_stopping() {
            return false;
        }
        let mut said = Fields::default();
        event.record(&mut said);
        !ROUTINE_BROKER_ERRORS.iter().any(|r| said.message.contains(r))
    }
}

struct MqttLayer {
    tx: mpsc::Sender<LogLine>,
    component: String,
}

impl<S: Subscriber> Layer<S> for MqttLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() > Level::INFO || QUIET_TARGETS.iter().any(|t| meta.target().starts_with(t)) {
            return;
        }
        let mut visitor = Fields::default();
        event.record(&mut visitor);
        let line = LogLine {
            ts_ms: now_ms(),
            level: meta.level().to_string(),
            component: self.component.clone(),
            target: meta.target().to_owned(),
            message: visitor.message,
            fields: visitor.fields,
        };
        let _ = self.tx.try_send(line);
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    fields: Map<String, Value>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            self.message = match value {
                Value::String(s) => s,
                other => other.to_string(),
            };
        } else {
            self.fields.insert(field.name().to_owned(), value);
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, Value::from(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Every event's level and message.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<(Level, String)>>>);

    impl<S: Subscriber> Layer<S> for Seen {
        fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
            let mut said = Fields::default();
            event.record(&mut said);
            self.0.lock().expect("not poisoned").push((*event.metadata().level(), said.message));
        }
    }

    #[test]
    fn the_brokers_routine_errors_and_its_errors_while_stopping_are_left_out() {
        let seen = Seen::default();
        let subscriber = tracing_subscriber::registry().with(seen.clone()).with(Routine);
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(target: "rumqttd::router::routing", "no-connection id {} is already gone", 1);
            tracing::error!(target: "rumqttd::server::broker", error = "Recv(Disconnected)", "router-drop");
            tracing::error!(target: "rumqttd::server::broker", "Failed to bind");
            tracing::error!("no-connection id 2 is already gone");
            crate::lifecycle::stopping();
            tracing::error!(target: "rumqttd::server::broker", "disconnected");
            tracing::error!("a store write failed");
        });
        let seen = seen.0.lock().expect("not poisoned").clone();
        assert_eq!(
            seen,
            vec![
                (Level::ERROR, "Failed to bind".to_owned()),
                (Level::ERROR, "no-connection id 2 is already gone".to_owned()),
                (Level::ERROR, "a store write failed".to_owned()),
            ]
        );
    }
}
