//! A real PostgreSQL for tests: Debian's server (`postgresql`), `initdb`
//! into a temporary directory and started with `pg_ctl` on a free loopback
//! port — no system service. Password authentication over TCP, as a
//! deployed store has it. Stopped, and its directory removed, on drop.
//!
//! As root (CI), the server runs as the `postgres` account Debian's
//! package makes: PostgreSQL refuses to run as root.

#![allow(clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The database the harness makes, and the role that owns it.
pub const USER: &str = "faena";
const DATABASE: &str = "faena";

#[derive(Debug)]
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    password: String,
    running: bool,
    /// Serves TLS with a certificate signed by [`Postgres::ca_file`].
    tls: bool,
}

/// Where Debian keeps the server's binaries: `FAENA_TEST_PG_BIN`, else the
/// newest `/usr/lib/postgresql/*/bin` with an `initdb`.
pub fn bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("FAENA_TEST_PG_BIN") {
        return Some(dir.into());
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|b| b.join("initdb").exists())
        .collect();
    found.sort_by_key(|b| {
        b.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str()).and_then(|v| v.parse::<u32>().ok())
    });
    found.pop()
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

impl Postgres {
    /// `initdb`, then starts the server and makes the `faena` database.
    pub fn start() -> Self {
        Self::start_with(None, None)
    }

    /// The same, its directory (data, socket, log) made inside `parent`
    /// (a small file system of the test's own, say).
    pub fn start_in(parent: &Path) -> Self {
        Self::start_with(None, Some(parent))
    }

    /// The same, serving TLS (and plain TCP) with a certificate for
    /// `names` signed by a CA of its own ([`Postgres::ca_file`]).
    pub fn start_tls(names: &[&str]) -> Self {
        Self::start_with(Some(names), None)
    }

    fn start_with(tls_names: Option<&[&str]>, parent: Option<&Path>) -> Self {
        let bin = bin_dir().expect("PostgreSQL's server binaries (Debian: apt install postgresql)");
        let mut builder = tempfile::Builder::new();
        builder.prefix("faena-pg-");
        let dir = match parent {
            Some(p) => builder.tempdir_in(p),
            None => builder.tempdir(),
        }
        .expect("temp dir");
        let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
        let pg = Self { dir, bin, port: free_port(), password, running: false, tls: false };
        std::fs::write(pg.dir.path().join("pwfile"), format!("{}\n", pg.password)).expect("password file");
        std::fs::create_dir_all(pg.socket_dir()).expect("socket dir");
        if is_root() {
            let out = Command::new("chown").args(["-R", "postgres:postgres"]).arg(pg.dir.path()).output();
            check("chown", out);
        }
        let data = pg.data_dir();
        let pwfile = pg.dir.path().join("pwfile");
        let args: Vec<&std::ffi::OsStr> = vec![
            "-D".as_ref(),
            data.as_os_str(),
            "-U".as_ref(),
            USER.as_ref(),
            "--pwfile".as_ref(),
            pwfile.as_os_str(),
            "--auth-local=trust".as_ref(),
            "--auth-host=scram-sha-256".as_ref(),
            "--no-sync".as_ref(),
            "-E".as_ref(),
            "UTF8".as_ref(),
        ];
        check("initdb", pg.run("initdb", &args));
        let mut pg = pg;
        pg.tls = tls_names.is_some();
        if let Some(names) = tls_names {
            pg.make_certificates(names);
        }
        pg.resume();
        check("createdb", pg.client("createdb").arg(DATABASE).output());
        pg
    }

    /// The CA certificate (PEM) the server's certificate is signed by.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn make_certificates(&self, names: &[&str]) {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "Faena test store CA");
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("CA key")).expect("CA certificate");
        let key = KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let cert = CertificateParams::new(names).expect("parameters").signed_by(&key, &ca).expect("certificate");
        std::fs::write(self.ca_file(), ca.pem()).expect("CA file");
        let data = self.data_dir();
        std::fs::write(data.join("server.crt"), cert.pem()).expect("certificate file");
        let key_file = data.join("server.key");
        std::fs::write(&key_file, key.serialize_pem()).expect("key file");
        std::fs::set_permissions(&key_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("key mode");
        if is_root() {
            for f in ["server.crt", "server.key"] {
                check("chown", Command::new("chown").arg("postgres:postgres").arg(data.join(f)).output());
            }
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    /// `postgres://faena:…@127.0.0.1:port/faena`.
    pub fn url(&self) -> String {
        format!("postgres://{USER}:{}@127.0.0.1:{}/{DATABASE}", self.password, self.port)
    }

    /// The server's own log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Starts the server again on the same port and data (after
    /// [`Postgres::stop`] or [`Postgres::kill9`]); returns once it accepts
    /// connections (`pg_ctl -w`).
    pub fn resume(&mut self) {
        let data = self.data_dir();
        let log = self.dir.path().join("server.log");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on{}",
            self.port,
            self.socket_dir().display(),
            if self.tls { " -c ssl=on" } else { "" }
        );
        let args: Vec<&std::ffi::OsStr> = vec![
            "-D".as_ref(),
            data.as_os_str(),
            "-l".as_ref(),
            log.as_os_str(),
            "-o".as_ref(),
            opts.as_ref(),
            "-w".as_ref(),
            "-t".as_ref(),
            "60".as_ref(),
            "start".as_ref(),
        ];
        check("pg_ctl start", self.run("pg_ctl", &args));
        self.running = true;
    }

    /// Whether the server runs (`pg_ctl status`): a server that met a full
    /// disk may have stopped by itself.
    pub fn is_up(&self) -> bool {
        let data = self.data_dir();
        let args: Vec<&std::ffi::OsStr> = vec!["-D".as_ref(), data.as_os_str(), "status".as_ref()];
        self.run("pg_ctl", &args).is_ok_and(|o| o.status.success())
    }

    /// A clean, fast shutdown (`pg_ctl stop -m fast`): sessions are cut.
    pub fn stop(&mut self) {
        check("pg_ctl stop", self.pg_ctl_stop("fast"));
        self.running = false;
    }

    fn pg_ctl_stop(&self, mode: &str) -> std::io::Result<Output> {
        let data = self.data_dir();
        let args: Vec<&std::ffi::OsStr> =
            vec!["-D".as_ref(), data.as_os_str(), "-m".as_ref(), mode.as_ref(), "-w".as_ref(), "stop".as_ref()];
        self.run("pg_ctl", &args)
    }

    /// Kills the server's main process with SIGKILL, as a crash would;
    /// its backends exit on their own once they notice.
    pub fn kill9(&mut self) {
        let pid = std::fs::read_to_string(self.data_dir().join("postmaster.pid"))
            .ok()
            .and_then(|p| p.lines().next().and_then(|l| l.trim().parse::<i32>().ok()))
            .expect("postmaster.pid");
        let out = Command::new("kill").args(["-9", &pid.to_string()]).output();
        check("kill -9", out);
        // Its backends go when they see the postmaster gone; wait for the
        // port and the shared memory to be free before a restart.
        let _ =
            Command::new("sh").arg("-c").arg(format!("while kill -0 {pid} 2>/dev/null; do sleep 0.05; done")).output();
        self.running = false;
    }

    /// Runs one SQL statement as the superuser, over the local socket.
    pub fn sql(&self, statement: &str) -> String {
        let out = self.psql().args(["-A", "-t", "-c", statement]).output();
        let out = out.expect("psql runs");
        assert!(out.status.success(), "psql {statement:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn run(&self, tool: &str, args: &[&std::ffi::OsStr]) -> std::io::Result<Output> {
        let exe = self.bin.join(tool);
        if is_root() {
            Command::new("runuser").args(["-u", "postgres", "--"]).arg(exe).args(args).current_dir("/").output()
        } else {
            Command::new(exe).args(args).output()
        }
    }

    /// Runs SQL as the superuser over the local socket in the background
    /// (a session that holds a lock for a while); wait on the child.
    pub fn sql_in_background(&self, statements: &str) -> std::process::Child {
        let child = self.psql().args(["-q", "-c", statements]).stdout(std::process::Stdio::null()).spawn();
        child.expect("psql runs")
    }

    /// `psql` on the harness's database as its superuser, stopping at the
    /// first error.
    fn psql(&self) -> Command {
        let mut psql = self.client("psql");
        psql.args(["-d", DATABASE, "-X", "-v", "ON_ERROR_STOP=1"]);
        psql
    }

    /// A client tool (Debian keeps them beside the server's) aimed at the
    /// server's local socket as its superuser.
    fn client(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        let mut command = Command::new(if exe.exists() { exe } else { Path::new(tool).to_path_buf() });
        command.arg("-h").arg(self.socket_dir()).args(["-p", &self.port.to_string(), "-U", USER]);
        command
    }
}

fn check(what: &str, out: std::io::Result<Output>) {
    let out = out.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.running {
            let data = self.data_dir();
            let args: Vec<&std::ffi::OsStr> = vec![
                "-D".as_ref(),
                data.as_os_str(),
                "-m".as_ref(),
                "immediate".as_ref(),
                "-w".as_ref(),
                "stop".as_ref(),
            ];
            let _ = self.run("pg_ctl", &args);
        }
    }
}
