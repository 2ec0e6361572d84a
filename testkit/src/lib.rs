//! Runs real Faena processes (and Mosquitto) on ephemeral loopback ports for
//! the integration tests and benchmarks: waits on their READY lines and on
//! job events, never on fixed sleeps, and kills every process it started when
//! dropped.
//!
//! The binaries come from the same target directory as the test executable;
//! `scripts/test.sh` builds them first (`cargo build --bins`).
//!
//! - [`api`]: the REST client and job event streams; [`process`]: child
//!   processes, their READY lines, CPU and memory from `/proc`.
//! - [`mosquitto`]: Mosquitto with the stack's accounts and ACL.
//! - [`fake_ai`]: a local server speaking Gemini's and OpenAI's wire formats.
//! - [`sim`]: simulated workers (MQTT + gRPC in-process) for scale benches.
//! - [`monerod`]: a real regtest Monero node; [`stratum`]: a miner speaking
//!   XMRig's Stratum, hashing for real.
//!
//! A test harness: failing loudly (panics, `expect`) is its job.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

pub mod api;
pub mod bench;
pub mod cli;
pub mod custom;
pub mod fake_ai;
pub mod hostile;
pub mod monerod;
pub mod mosquitto;
pub mod process;
pub mod sim;
pub mod stratum;
pub mod tls;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use api::Api;
pub use fake_ai::FakeAi;
pub use mosquitto::Mosquitto;
pub use process::Proc;
use serde_json::Value;

/// Generous bound for anything a test waits on.
pub const WAIT: Duration = Duration::from_secs(60);

/// The target directory the running test or bench was built into.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

pub fn bin(name: &str) -> PathBuf {
    let path = target_dir().join(name);
    assert!(path.exists(), "{} is missing: build it first (cargo build --bins)", path.display());
    path
}

/// How the master reaches its broker.
#[derive(Debug, Clone)]
pub enum Broker {
    Embedded,
    /// A broker of its own (Mosquitto) with the master's account; with
    /// `dynsec`, the master makes the workers' own there.
    External {
        url: String,
        master: Option<mosquitto::Account>,
        dynsec: bool,
    },
}

#[derive(Debug, Clone)]
pub struct MasterOpts {
    pub broker: Broker,
    pub heartbeat_ms: u32,
    pub queue_capacity: usize,
    pub extra: Vec<(String, String)>,
    /// Another build's master (a benchmark's baseline); this build's when none.
    pub master_bin: Option<PathBuf>,
}

impl Default for MasterOpts {
    fn default() -> Self {
        Self { broker: Broker::Embedded, heartbeat_ms: 500, queue_capacity: 100_000, extra: vec![], master_bin: None }
    }
}

/// Where a started master listens (from its READY line).
#[derive(Debug, Clone)]
pub struct MasterAddrs {
    pub http: String,
    pub grpc: String,
    pub mqtt: String,
    /// The Stratum server (`FAENA_STRATUM_ADDR` in the master's extra env).
    pub stratum: Option<String>,
}

/// A master and its workers in one temporary directory.
#[derive(Debug)]
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub opts: MasterOpts,
    pub master: Option<Proc>,
    pub addrs: MasterAddrs,
    pub workers: Vec<Proc>,
    pub token: String,
    pub api: Api,
    /// The PostgreSQL the store is on when `FAENA_TEST_STORE=postgres`
    /// (dropped last: after the processes that use it).
    pub store: Option<faena_store::harness::Postgres>,
}

pub const TOKEN: &str = "test-cluster-token-0123456789";

impl Cluster {
    ///
    /// With `FAENA_TEST_STORE=postgres` (and no store given in `opts`), the
    /// master's store is a PostgreSQL of the cluster's own (the store's
    /// harness), so the same suites run on both backends; with
    /// `FAENA_TEST_STORE=postgres-writers`, that with four writers
    /// (`FAENA_STORE_WRITERS`); with `FAENA_TEST_STORE=sqlite-shards`,
    /// SQLite over four files.
    pub async fn start(mut opts: MasterOpts) -> Self {
        let dir = tempfile::Builder::new().prefix("faena-test-").tempdir().expect("temp dir");
        let given = opts.extra.iter().any(|(k, _)| k.starts_with("FAENA_STORE_URL"));
        let wanted = std::env::var("FAENA_TEST_STORE").ok().filter(|_| !given);
        let on_pg = matches!(wanted.as_deref(), Some("postgres" | "postgres-writers"));
        let store = on_pg.then(faena_store::harness::Postgres::start);
        if let Some(pg) = &store {
            opts.extra.push(("FAENA_STORE_URL".to_owned(), pg.url()));
        }
        if wanted.as_deref() == Some("postgres-writers") {
            opts.extra.push(("FAENA_STORE_WRITERS".to_owned(), "4".to_owned()));
        }
        if wanted.as_deref() == Some("sqlite-shards") {
            opts.extra.push(("FAENA_STORE_SHARDS".to_owned(), "4".to_owned()));
        }
        let (master, addrs) = start_master(dir.path(), &opts, None).await;
        let api = Api::new(&addrs.http);
        Self { dir, opts, master: Some(master), addrs, workers: vec![], token: TOKEN.into(), api, store }
    }

    /// The same, with a master that answers its API only with `api_token`
    /// (`FAENA_API_TOKEN`); `api` carries it.
    pub async fn start_with_api_token(mut opts: MasterOpts, api_token: &str) -> Self {
        opts.extra.push(("FAENA_API_TOKEN".to_owned(), api_token.to_owned()));
        let mut c = Self::start(opts).await;
        c.api = Api::with_token(&c.addrs.http, api_token);
        c
    }

    /// Starts the master again on the same ports and data directory.
    pub async fn restart_master(&mut self) {
        let (master, addrs) = start_master(self.dir.path(), &self.opts, Some(&self.addrs)).await;
        self.master = Some(master);
        self.addrs = addrs;
    }

    /// Starts another master on the same options (store and broker) in a
    /// directory of its own, `name`, on ports of its own: a standby while
    /// this cluster's master leads a shared store.
    pub async fn add_master(&self, name: &str) -> (Proc, MasterAddrs) {
        self.start_master_in(name, None).await
    }

    /// Starts a master in directory `name` of this cluster's (`""`: the
    /// cluster's own master's), on the addresses of `same_as` when given.
    pub async fn start_master_in(&self, name: &str, same_as: Option<&MasterAddrs>) -> (Proc, MasterAddrs) {
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(&dir).expect("master dir");
        start_master(&dir, &self.opts, same_as).await
    }

    /// Starts an edge (`faena-edge`) in front of `masters`, asking them who
    /// leads every 100 ms; with Stratum when they serve it. Its web and
    /// Stratum addresses are in its `MasterAddrs` (no gRPC, no broker).
    pub async fn add_edge(&self, name: &str, masters: &[&MasterAddrs]) -> (Proc, MasterAddrs) {
        let list: Vec<&str> = masters.iter().map(|m| m.http.as_str()).collect();
        let mut env = vec![
            ("FAENA_HTTP_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
            ("FAENA_EDGE_MASTERS".to_owned(), list.join(",")),
            ("FAENA_EDGE_CHECK_MS".to_owned(), "100".to_owned()),
            ("FAENA_CLUSTER_TOKEN".to_owned(), self.token.clone()),
        ];
        if masters.iter().any(|m| m.stratum.is_some()) {
            env.push(("FAENA_STRATUM_ADDR".to_owned(), "127.0.0.1:0".to_owned()));
        }
        let proc = Proc::spawn(&bin("faena-edge"), &[], &env, &self.dir.path().join(format!("{name}.log"))).await;
        let field = |k: &str| proc.ready[k].as_str().map(str::to_owned);
        let addrs = MasterAddrs {
            http: field("http").unwrap_or_default(),
            grpc: String::new(),
            mqtt: String::new(),
            stratum: field("stratum"),
        };
        (proc, addrs)
    }

    pub fn master(&mut self) -> &mut Proc {
        self.master.as_mut().expect("master running")
    }

    pub async fn add_worker(&mut self, id: &str, slots: u32) -> usize {
        self.add_worker_with(id, slots, &[]).await
    }

    pub async fn add_worker_with(&mut self, id: &str, slots: u32, extra: &[(&str, &str)]) -> usize {
        let mut env = self.worker_env(id, slots);
        // Light mode: a fast-mode dataset takes half a minute to build.
        env.push(("FAENA_RANDOMX_MODE".to_owned(), "light".to_owned()));
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let log = self.dir.path().join(format!("worker-{id}.log"));
        let proc = Proc::spawn(&bin("faena-worker"), &[], &env, &log).await;
        self.workers.push(proc);
        self.workers.len() - 1
    }

    /// The settings every worker of this cluster starts with, whatever its language.
    fn worker_env(&self, id: &str, slots: u32) -> Vec<(String, String)> {
        vec![
            ("FAENA_WORKER_ID".to_owned(), id.to_owned()),
            ("FAENA_MASTER_URL".to_owned(), format!("http://{}", self.addrs.grpc)),
            ("FAENA_MQTT_URL".to_owned(), self.addrs.mqtt.clone()),
            ("FAENA_CLUSTER_TOKEN".to_owned(), self.token.clone()),
            ("FAENA_WORKER_SLOTS".to_owned(), slots.to_string()),
            ("FAENA_DRAIN_TIMEOUT_MS".to_owned(), "10000".to_owned()),
        ]
    }

    /// Starts the Python worker of `examples/python-worker` (its `run.sh`,
    /// which makes its virtual environment and stubs the first time) with
    /// the same settings a Rust worker gets.
    pub async fn add_python_worker(&mut self, id: &str, slots: u32, extra: &[(&str, &str)]) -> usize {
        let mut env = self.worker_env(id, slots);
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let log = self.dir.path().join(format!("worker-{id}.log"));
        let proc = Proc::spawn(&repo().join("examples/python-worker/run.sh"), &[], &env, &log).await;
        self.workers.push(proc);
        self.workers.len() - 1
    }

    pub fn worker(&mut self, id: &str) -> &mut Proc {
        self.workers.iter_mut().find(|w| w.ready["worker_id"] == id).expect("no such worker")
    }

    /// Waits until the master lists exactly `n` workers.
    pub async fn wait_workers(&self, n: usize) -> Vec<Value> {
        let api = self.api.clone();
        eventually(&format!("{n} workers registered"), || {
            let api = api.clone();
            async move {
                let list = api.workers().await;
                (list.len() == n).then_some(list)
            }
        })
        .await
    }

    /// Where a worker serves `/metrics`.
    pub fn worker_metrics_url(&mut self, id: &str) -> String {
        format!("http://{}/metrics", self.worker(id).ready["metrics"].as_str().expect("metrics address"))
    }

    /// Waits until worker `id`'s own `faena_worker_running` gauge reads
    /// `units`: the worker holds them, not only the store.
    pub async fn wait_worker_running(&mut self, id: &str, units: f64, what: &str) {
        let url = self.worker_metrics_url(id);
        eventually(what, || {
            let url = url.clone();
            async move { (sample(&scrape(&url).await, "faena_worker_running") == Some(units)).then_some(()) }
        })
        .await;
    }

    /// Sends worker `id` SIGTERM and, once it says it drains (the Rust and
    /// Python workers log the same words), kills the master and starts it
    /// again: what a worker drains meets a master that does not know it.
    pub async fn restart_master_while_draining(&mut self, id: &str) {
        assert!(process::signal(self.worker(id).pid(), "TERM"), "SIGTERM sent to {id}");
        eventually(&format!("{id} drains"), || {
            let said = self.worker_log(id);
            async move { said.contains("draining: no new work").then_some(()) }
        })
        .await;
        self.master().kill9().await;
        self.restart_master().await;
    }

    pub fn master_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("master.log")).unwrap_or_default()
    }

    /// What worker `id` logged so far.
    pub fn worker_log(&self, id: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("worker-{id}.log"))).unwrap_or_default()
    }
}

/// A failing test shows what its processes logged last: the tail of every
/// log in the cluster's directory and the directories of its other masters.
impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprint!("{}", log_tails(self.dir.path(), LOG_TAIL_LINES));
        }
    }
}

/// Lines of each log a failing test prints.
const LOG_TAIL_LINES: usize = 60;

/// The last `lines` lines of every `*.log` in `dir` and its subdirectories
/// (one level down), each under its path.
fn log_tails(dir: &Path, lines: usize) -> String {
    let mut logs: Vec<PathBuf> = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(dir) {
        dirs.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
    }
    for d in dirs {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        logs.extend(entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "log")));
    }
    logs.sort();
    let mut out = String::new();
    for path in logs {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let shown = &all[all.len().saturating_sub(lines)..];
        let name = path.strip_prefix(dir).unwrap_or(&path).display();
        out.push_str(&format!("--- {name} (last {} of {} lines)\n", shown.len(), all.len()));
        for line in shown {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

async fn start_master(dir: &Path, opts: &MasterOpts, same_as: Option<&MasterAddrs>) -> (Proc, MasterAddrs) {
    let port = |a: Option<&str>| a.map(str::to_owned).unwrap_or_else(|| "127.0.0.1:0".into());
    let mqtt_listen = same_as.and_then(|a| a.mqtt.strip_prefix("mqtt://").map(str::to_owned));
    let mut env = vec![
        ("FAENA_HTTP_ADDR".to_owned(), port(same_as.map(|a| a.http.as_str()))),
        ("FAENA_GRPC_ADDR".to_owned(), port(same_as.map(|a| a.grpc.as_str()))),
        ("FAENA_DATA_DIR".to_owned(), dir.join("data").display().to_string()),
        ("FAENA_CLUSTER_TOKEN".to_owned(), TOKEN.to_owned()),
        ("FAENA_HEARTBEAT_MS".to_owned(), opts.heartbeat_ms.to_string()),
        ("FAENA_QUEUE_CAPACITY".to_owned(), opts.queue_capacity.to_string()),
        // A fast-mode verifier builds a 2 GiB dataset first: tests verify in light mode.
        ("FAENA_VERIFY_MODE".to_owned(), "light".to_owned()),
    ];
    match &opts.broker {
        Broker::Embedded => {
            env.push(("FAENA_MQTT_ADDR".to_owned(), mqtt_listen.unwrap_or_else(|| "127.0.0.1:0".into())))
        }
        Broker::External { url, master, dynsec } => {
            env.push(("FAENA_MQTT_URL".to_owned(), url.clone()));
            env.push(("FAENA_MQTT_DYNSEC".to_owned(), dynsec.to_string()));
            env.extend(master.iter().flat_map(account_env));
        }
    }
    env.extend(opts.extra.iter().cloned());
    let master = opts.master_bin.clone().unwrap_or_else(|| bin("faena-master"));
    let proc = Proc::spawn(&master, &[], &env, &dir.join("master.log")).await;
    let field = |k: &str| proc.ready[k].as_str().unwrap_or_default().to_owned();
    let stratum = proc.ready["stratum"].as_str().map(str::to_owned);
    let addrs = MasterAddrs { http: field("http"), grpc: field("grpc"), mqtt: field("mqtt"), stratum };
    (proc, addrs)
}

fn account_env(a: &mosquitto::Account) -> [(String, String); 2] {
    [
        ("FAENA_MQTT_USERNAME".to_owned(), a.username.to_owned()),
        ("FAENA_MQTT_PASSWORD".to_owned(), a.password.to_owned()),
    ]
}

/// Polls `check` every 20 ms until it yields a value; panics after [`WAIT`].
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_within(what, WAIT, check).await
}

/// [`eventually`] for a wait on luck rather than on an event, such as
/// blocks found by hashing, whose time has a long tail: panics after
/// `within`.
pub async fn eventually_within<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `path` of the master whose web port is `http`, as JSON, when it
/// answers within 2 s (a master that steps down or is being replaced is
/// away for a moment: none then, never a panic).
pub async fn get_json(http: &str, path: &str) -> Option<Value> {
    let client = faena_common::tls::http_client().no_proxy().timeout(Duration::from_secs(2)).build().ok()?;
    client.get(format!("http://{http}{path}")).send().await.ok()?.json().await.ok()
}

/// An HTTP client for a test or a bench (`faena_common::tls::http_client`,
/// the one way to build one, with reqwest's defaults).
pub fn http() -> reqwest::Client {
    faena_common::tls::http_client().build().expect("an HTTP client")
}

/// A Prometheus text page (empty when it cannot be fetched).
pub async fn scrape(url: &str) -> String {
    match crate::http().get(url).send().await {
        Ok(resp) => resp.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// The value of the sample named exactly `name`, labels included
/// (`faena_jobs_total{state="succeeded"}`), in a Prometheus text page.
pub fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// An account on a test master's embedded broker (`faena-master` for the
/// master's own, a worker's id for that worker's), from the test token.
pub fn embedded_login(name: &str) -> (String, String) {
    let token = faena_proto::secret::Secret::new(TOKEN);
    let account = match faena_proto::ids::WorkerId::parse(name) {
        Ok(worker) => worker.broker_account(),
        Err(_) => name.to_owned(),
    };
    let c = faena_common::broker::embedded_credentials(&token, &account);
    (c.username, c.password.expose().to_owned())
}

/// The default local model (SmolLM2-135M-Instruct GGUF): `FAENA_TEST_LOCAL_MODEL`
/// when set (`scripts/test.sh` sets it), else fetched into the model cache
/// by `scripts/fetch-model.sh`.
pub fn local_model() -> PathBuf {
    if let Some(p) = std::env::var_os("FAENA_TEST_LOCAL_MODEL").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/fetch-model.sh");
    let out = std::process::Command::new(script).output().expect("scripts/fetch-model.sh");
    assert!(out.status.success(), "fetch-model.sh: {}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// An MQTT client that hears everything published on `topic` (wildcards
/// allowed) from the moment [`Listener::start`] returns: it waits for the
/// broker's SUBACK. Messages come as (topic, payload).
#[derive(Debug)]
pub struct Listener {
    pub messages: tokio::sync::mpsc::UnboundedReceiver<(String, bytes::Bytes)>,
    _client: rumqttc::AsyncClient,
    pump: tokio::task::JoinHandle<()>,
}

impl Listener {
    pub async fn start(mqtt_url: &str, client_id: &str, topic: &str) -> Self {
        Self::start_with(mqtt_url, client_id, topic, None).await
    }

    /// The same, logged in with `login` (user name, password).
    pub async fn start_with(mqtt_url: &str, client_id: &str, topic: &str, login: Option<(String, String)>) -> Self {
        Self::start_on(mqtt_url, client_id, &[topic], login).await
    }

    /// The same on several topics; returns once the broker acknowledged them all.
    pub async fn start_on(mqtt_url: &str, client_id: &str, topics: &[&str], login: Option<(String, String)>) -> Self {
        use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
        let port: u16 = mqtt_url.rsplit(':').next().and_then(|p| p.parse().ok()).expect("broker port");
        let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
        options.set_max_packet_size(16 << 20, 16 << 20);
        if let Some((user, password)) = login {
            options.set_credentials(user, password);
        }
        let (client, mut el) = AsyncClient::new(options, 1000);
        for topic in topics {
            client.subscribe(*topic, QoS::AtLeastOnce).await.expect("subscribe");
        }
        let mut acks = topics.len();
        let (tx, messages) = tokio::sync::mpsc::unbounded_channel();
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        let pump = tokio::spawn(async move {
            let mut ready_tx = Some(ready_tx);
            while let Ok(event) = el.poll().await {
                match event {
                    Event::Incoming(Packet::SubAck(_)) => {
                        acks = acks.saturating_sub(1);
                        if acks == 0 {
                            ready_tx.take().map(|r| r.send(()));
                        }
                    }
                    Event::Incoming(Packet::Publish(p)) => {
                        let _ = tx.send((p.topic.clone(), p.payload.clone()));
                    }
                    _ => {}
                }
            }
        });
        tokio::time::timeout(WAIT, ready).await.expect("the broker acknowledged the subscription").expect("pump");
        Self { messages, _client: client, pump }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.pump.abort();
    }
}

/// The repository's root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_path_buf()
}

/// Runs one of the page's node test scripts (`web/tests/<script>`) against
/// `c`'s master; it must print OK. Each script bounds its own waits; this
/// bound only keeps a script stuck in a way nobody foresaw from holding up
/// the whole run (it is killed).
pub async fn run_node(c: &Cluster, script: &str, extra: &[&str]) {
    run_node_at(&format!("http://{}", c.addrs.http), script, extra).await;
}

/// [`run_node`] against the master at `url` (`https://…` for one serving TLS).
pub async fn run_node_at(url: &str, script: &str, extra: &[&str]) {
    let run = tokio::process::Command::new("node")
        .arg(repo().join("web/tests").join(script))
        .arg(url)
        .args(extra)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(600), run)
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish in 10 minutes"))
        .expect("node runs (scripts/test.sh installs it and chromium)");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && stdout.contains("OK"),
        "{script}:
{stdout}
{stderr}"
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_failing_test_shows_the_last_lines_of_every_log_beside_and_one_level_down() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("master.log"), "one\ntwo\nthree\n").expect("write");
        std::fs::create_dir(dir.path().join("second")).expect("dir");
        std::fs::write(dir.path().join("second/master.log"), "only\n").expect("write");
        std::fs::write(dir.path().join("notes.txt"), "not a log\n").expect("write");
        let shown = super::log_tails(dir.path(), 2);
        assert_eq!(
            shown,
            "--- master.log (last 2 of 3 lines)\ntwo\nthree\n--- second/master.log (last 1 of 1 lines)\nonly\n"
        );
    }
}
