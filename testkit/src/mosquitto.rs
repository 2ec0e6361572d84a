//! A real Mosquitto broker for tests, configured exactly as the stack
//! configures it: the repository's `mosquitto/setup.sh` renders the same
//! dynamic security file (the master's account; workers get theirs from
//! the master), observer account, ACL and `mosquitto.conf` (no anonymous
//! access, persistent sessions, no limit on queued QoS 1 messages) on free
//! loopback ports.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::{Broker, WAIT, free_port};

/// One of the broker's two fixed accounts.
#[derive(Debug, Clone, Copy)]
pub struct Account {
    pub username: &'static str,
    pub password: &'static str,
}

pub const MASTER: Account = Account { username: "master", password: "mqtt-test-master" };
pub const OBSERVER: Account = Account { username: "observer", password: "mqtt-test-observer" };

#[derive(Debug)]
pub struct Mosquitto {
    pub child: Option<tokio::process::Child>,
    /// The services' listener (mqtts when started with TLS).
    pub port: u16,
    /// The observers' listener (the observer account logs in there only).
    pub observer_port: u16,
    pub dir: PathBuf,
    /// The directory `scripts/make-certs.sh` filled, when serving mqtts.
    pub tls: Option<PathBuf>,
}

/// The repository's broker setup (`mosquitto/`), as the image runs it.
pub fn setup_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../mosquitto/setup.sh")
}

/// Starts tried on fresh ports before a test gives up.
const START_TRIES: usize = 5;

impl Mosquitto {
    /// Starts Mosquitto on a free port with the stack's accounts and ACL.
    pub async fn start(dir: &Path) -> Self {
        Self::start_with(dir, None).await
    }

    /// The same, the services' listener on mqtts, serving `certs/mosquitto.pem`.
    pub async fn start_tls(dir: &Path, certs: &Path) -> Self {
        Self::start_with(dir, Some(certs.to_owned())).await
    }

    async fn start_with(dir: &Path, certs: Option<PathBuf>) -> Self {
        let dir = dir.join("mosquitto");
        std::fs::create_dir_all(&dir).expect("mosquitto dir");
        for a in [MASTER, OBSERVER] {
            std::fs::write(dir.join(a.username), format!("{}\n", a.password)).expect("password file");
        }
        let mut m = Self { child: None, port: 0, observer_port: 0, dir, tls: certs };
        // A free port may be taken by another test between its choice and
        // Mosquitto's bind: it then exits at once, and new ports are tried.
        for _ in 0..START_TRIES {
            (m.port, m.observer_port) = (free_port(), free_port());
            m.spawn();
            if m.listening().await {
                return m;
            }
        }
        panic!("mosquitto did not start in {START_TRIES} tries: {}", m.log());
    }

    /// The services' URL (`mqtts://` when started with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "mqtts" } else { "mqtt" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// What a test cluster uses: the master's account, managing the
    /// workers' own through the dynamic security plugin.
    pub fn broker(&self) -> Broker {
        Broker::External { url: self.url(), master: Some(MASTER), dynsec: true }
    }

    /// `mosquitto_sub`/`mosquitto_pub` arguments for this broker and account
    /// (the observer's on the observers' listener; a plain broker).
    pub fn cli_args(&self, a: Account) -> Vec<String> {
        self.login_args(a.username, a.password)
    }

    /// The same for any login (a worker's, handed out by the master).
    pub fn login_args(&self, username: &str, password: &str) -> Vec<String> {
        let port = if username == OBSERVER.username { self.observer_port } else { self.port };
        ["-h", "127.0.0.1", "-p", &port.to_string(), "-u", username, "-P", password].map(str::to_owned).to_vec()
    }

    /// (Re)starts the broker on the same port, with its persisted sessions.
    pub async fn restart(&mut self) {
        self.spawn();
        assert!(self.listening().await, "mosquitto did not start: {}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
    }

    fn spawn(&mut self) {
        let log = self.dir.join("mosquitto.log");
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("mosquitto log");
        let err = out.try_clone().expect("mosquitto log");
        let file = |name: &str| self.dir.join(name).display().to_string();
        let certs = self.tls.clone().unwrap_or_else(|| self.dir.join("no-tls"));
        let child = tokio::process::Command::new(setup_script())
            .env("MOSQUITTO_TLS_CERT_FILE", certs.join("mosquitto.pem"))
            .env("MOSQUITTO_TLS_KEY_FILE", certs.join("mosquitto.key"))
            .env("MOSQUITTO_TLS_PORT", self.port.to_string())
            .env("FAENA_MQTT_MASTER_PASSWORD_FILE", file(MASTER.username))
            .env("FAENA_MQTT_OBSERVER_PASSWORD_FILE", file(OBSERVER.username))
            .env("MOSQUITTO_PORT", self.port.to_string())
            .env("MOSQUITTO_OBSERVER_PORT", self.observer_port.to_string())
            .env("MOSQUITTO_BIND", "127.0.0.1")
            .env("MOSQUITTO_RUN_DIR", file("run"))
            .env("MOSQUITTO_DATA_DIR", file("data"))
            // Tests run as root in directories only root may enter.
            .env("MOSQUITTO_USER", "root")
            .env("MOSQUITTO_BIN", "/usr/sbin/mosquitto")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .expect("mosquitto/setup.sh (apt-get install mosquitto)");
        self.child = Some(child);
    }

    /// Waits until both listeners answer: false when Mosquitto exited
    /// first (a port taken) or did not listen within [`WAIT`].
    async fn listening(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + WAIT;
        for port in [self.port, self.observer_port] {
            while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
                let exited = self.child.as_mut().is_none_or(|c| c.try_wait().ok().flatten().is_some());
                if exited || tokio::time::Instant::now() >= deadline {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        true
    }

    pub async fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }
}
