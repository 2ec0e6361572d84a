//! A real Mosquitto broker for tests, configured as the stack configures it:
//! passwords, no anonymous access, persistent sessions, and no limit on
//! queued QoS 1 messages (its default of 1000 drops work units).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{Proc, WAIT, free_port};

#[derive(Debug)]
pub struct Mosquitto {
    pub child: Option<tokio::process::Child>,
    pub port: u16,
    pub dir: PathBuf,
}

pub const USER: &str = "faena";
pub const PASSWORD: &str = "mqtt-test-password";

impl Mosquitto {
    /// Starts Mosquitto on a free port with one account (`USER`/`PASSWORD`).
    pub async fn start(dir: &Path) -> Self {
        let dir = dir.join("mosquitto");
        std::fs::create_dir_all(&dir).expect("mosquitto dir");
        let passwd = dir.join("passwd");
        let status = std::process::Command::new("mosquitto_passwd")
            .args(["-b", "-c"])
            .arg(&passwd)
            .args([USER, PASSWORD])
            .status()
            .expect("mosquitto_passwd (apt-get install mosquitto)");
        assert!(status.success(), "mosquitto_passwd failed");
        let mut m = Self { child: None, port: free_port(), dir };
        m.restart().await;
        m
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// (Re)starts the broker on the same port, with its persisted sessions.
    pub async fn restart(&mut self) {
        let conf = self.dir.join("mosquitto.conf");
        let text = format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {pw}\npersistence true\npersistence_location {dir}/\n\
             max_queued_messages 0\nmax_inflight_messages 0\nlog_dest stderr\nlog_type error\nlog_type warning\n",
            port = self.port,
            pw = self.dir.join("passwd").display(),
            dir = self.dir.display(),
        );
        std::fs::write(&conf, text).expect("mosquitto.conf");
        let log = self.dir.join("mosquitto.log");
        let bin = Path::new("/usr/sbin/mosquitto");
        let child = Proc::spawn_raw(bin, &["-c", conf.to_str().unwrap_or_default()], &[], &log);
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "mosquitto did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }
}
