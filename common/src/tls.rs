//! TLS between nodes (rustls): which CA a client trusts and which
//! certificate a server presents, from PEM files. `scripts/make-certs.sh`
//! makes a cluster CA and the certificates the stack uses.
//!
//! A client uses TLS when its URL says so (`https://` for the master's
//! gRPC, `mqtts://` for the broker) and trusts `FAENA_TLS_CA_FILE`, or the
//! system's roots when it is unset. The master serves gRPC and its embedded
//! broker over TLS when it has a certificate (`FAENA_TLS_CERT_FILE` and
//! `FAENA_TLS_KEY_FILE`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};

#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// CA certificate(s) (PEM) trusted for `https://` and `mqtts://` URLs;
    /// the system's roots when unset.
    #[arg(long, env = "FAENA_TLS_CA_FILE")]
    pub tls_ca_file: Option<PathBuf>,
    /// This node's certificate chain (PEM), for the TLS it serves.
    #[arg(long, env = "FAENA_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// The private key of `FAENA_TLS_CERT_FILE` (PEM).
    #[arg(long, env = "FAENA_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the {what} in {path}: {reason}")]
    Read { what: &'static str, path: PathBuf, reason: String },
    #[error("FAENA_TLS_CERT_FILE and FAENA_TLS_KEY_FILE go together: set both or neither")]
    HalfIdentity,
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// A certificate chain and its key, as PEM (what tonic takes).
#[derive(Clone)]
pub struct IdentityPem {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

impl std::fmt::Debug for IdentityPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdentityPem { key: [redacted], .. }")
    }
}

/// rustls' crypto, for every TLS Faena speaks: ring, which every binary
/// builds anyway.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The one way Faena builds an HTTP client. reqwest is built without a
/// crypto provider of its own and panics without one, so this installs
/// ring as the process's provider first (once). `clippy.toml` forbids
/// `reqwest::Client::new`, `::builder` and `reqwest::get`, so nothing
/// reaches reqwest around it.
#[allow(clippy::disallowed_methods)]
pub fn http_client() -> reqwest::ClientBuilder {
    static PROVIDER: std::sync::Once = std::sync::Once::new();
    // An Err means a provider is installed already, which is all we need.
    PROVIDER.call_once(|| drop(Arc::unwrap_or_clone(provider()).install_default()));
    reqwest::Client::builder()
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Read { what, path: path.to_owned(), reason: e.to_string() })
}

fn certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |reason: String| TlsError::Read { what, path: path.to_owned(), reason };
    let certs = CertificateDer::pem_slice_iter(&read(what, path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate in it".into()));
    }
    Ok(certs)
}

/// The roots a client trusts: the CA certificates in `ca_file`, or the
/// system's roots when there is none.
pub fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in certs("CA certificate", path)? {
                roots.add(cert).map_err(|e| TlsError::Config(format!("CA certificate in {}: {e}", path.display())))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    Ok(roots)
}

impl TlsArgs {
    /// The CA file's PEM, when one is set.
    pub fn ca_pem(&self) -> Result<Option<Vec<u8>>, TlsError> {
        self.tls_ca_file.as_deref().map(|p| read("CA certificate", p)).transpose()
    }

    /// The certificate and key files, when both are set (one alone is an error).
    fn identity_files(&self) -> Result<Option<(&Path, &Path)>, TlsError> {
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => Ok(Some((cert, key))),
            (None, None) => Ok(None),
            _ => Err(TlsError::HalfIdentity),
        }
    }

    /// This node's certificate and key, when both are set.
    pub fn identity_pem(&self) -> Result<Option<IdentityPem>, TlsError> {
        let Some((cert, key)) = self.identity_files()? else { return Ok(None) };
        Ok(Some(IdentityPem { cert: read("certificate", cert)?, key: read("private key", key)? }))
    }

    /// What a client trusts: the CA file, or the system's roots.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let roots = roots(self.tls_ca_file.as_deref())?;
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(config))
    }

    /// What a server presents, when this node has a certificate.
    pub fn server_config(&self) -> Result<Option<Arc<ServerConfig>>, TlsError> {
        let Some((cert, key)) = self.identity_files()? else { return Ok(None) };
        let chain = certs("certificate", cert)?;
        let key = PrivateKeyDer::from_pem_slice(&read("private key", key)?).map_err(|e| TlsError::Read {
            what: "private key",
            path: key.to_owned(),
            reason: e.to_string(),
        })?;
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::Config(format!("certificate and key in {}: {e}", cert.display())))?;
        Ok(Some(Arc::new(config)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(ca: Option<&Path>, cert: Option<&Path>, key: Option<&Path>) -> TlsArgs {
        TlsArgs {
            tls_ca_file: ca.map(Path::to_owned),
            tls_cert_file: cert.map(Path::to_owned),
            tls_key_file: key.map(Path::to_owned),
        }
    }

    #[test]
    fn bad_tls_files_are_clear_errors() {
        let dir = std::env::temp_dir().join(format!("faena-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a certificate").expect("write");
        let missing = dir.join("missing.pem");

        assert!(args(None, None, None).server_config().expect("no identity").is_none());
        assert!(args(None, None, None).identity_pem().expect("no identity").is_none());
        let half = args(None, Some(&junk), None);
        assert!(matches!(half.server_config(), Err(TlsError::HalfIdentity)));
        assert!(matches!(half.identity_pem(), Err(TlsError::HalfIdentity)));
        let e = args(Some(&missing), None, None).client_config().expect_err("missing CA").to_string();
        assert!(e.contains("CA certificate") && e.contains("missing.pem"), "{e}");
        let e = args(Some(&junk), None, None).client_config().expect_err("no PEM").to_string();
        assert!(e.contains("no PEM certificate"), "{e}");
        let e = args(None, Some(&junk), Some(&junk)).server_config().expect_err("junk").to_string();
        assert!(e.contains("junk.pem"), "{e}");
        // Without a CA file, the system's roots (none may be installed: still a config).
        assert!(args(None, None, None).client_config().is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
