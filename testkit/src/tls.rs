//! A TLS front, as a pool puts before its `stratum+ssl://` port: a private
//! CA (its certificate written to a PEM file, which a master trusts through
//! `SSL_CERT_FILE`), a certificate for 127.0.0.1 signed by it, and a
//! terminator that forwards each TLS connection to a plain TCP address.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

#[derive(Debug)]
pub struct TlsFront {
    /// Where it listens: `127.0.0.1:port`.
    pub addr: String,
    /// The CA's certificate (PEM) that signed the front's.
    pub ca_file: PathBuf,
    task: JoinHandle<()>,
}

impl TlsFront {
    /// Listens on an ephemeral loopback port and forwards to `upstream`.
    pub async fn start(dir: &Path, upstream: &str) -> Self {
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "Faena test CA");
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("CA key")).expect("CA certificate");
        let key = KeyPair::generate().expect("key");
        let params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("parameters");
        let cert = params.signed_by(&key, &ca).expect("certificate");
        let ca_file = dir.join("test-ca.pem");
        std::fs::write(&ca_file, ca.pem()).expect("write the CA certificate");

        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let config = ServerConfig::builder_with_provider(faena_common::tls::provider())
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .expect("server certificate");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address").to_string();
        let upstream = upstream.to_owned();
        let task = tokio::spawn(async move {
            // Dropped with the task: every forwarded connection ends with it.
            let mut conns = JoinSet::new();
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
                conns.spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    let Ok(mut up) = TcpStream::connect(&upstream).await else { return };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        Self { addr, ca_file, task }
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs the repository's `scripts/make-certs.sh` into `dir/certs`: a
/// cluster CA (`ca.pem`) and certificates for `master` and `mosquitto` that
/// name 127.0.0.1. Returns that directory.
pub fn make_certs(dir: &Path) -> PathBuf {
    let out = dir.join("certs");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/make-certs.sh");
    let status = std::process::Command::new(script)
        .arg("--out")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("runs scripts/make-certs.sh");
    assert!(status.success(), "scripts/make-certs.sh failed");
    out
}
