//! TLS to PostgreSQL, as libpq's `sslmode` means it: a managed server
//! (RDS, Cloud SQL, Neon…) or the stack's own asks for it. The driver
//! knows `disable`, `prefer` and `require` only, and no `sslrootcert`;
//! this reads them from the URL first:
//!
//! | `sslmode` | TLS | the server's certificate |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (default) | when the server offers it | not checked, unless `sslrootcert` is given (then as `verify-ca`) |
//! | `require` | always | the same |
//! | `verify-ca` | always | signed by `sslrootcert` (or the system's roots) |
//! | `verify-full` | always | that, and it names the host |

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use tokio_postgres::Config;
use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use tokio_rustls::rustls::crypto::WebPkiSupportedAlgorithms;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{self, CertificateError, ClientConfig, DigitallySignedStruct, SignatureScheme};

use crate::StoreError;

/// How much of the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Nothing,
    Chain,
    ChainAndName,
}

/// A store URL as the driver takes it, with the TLS it asks for.
pub(crate) struct Target {
    pub config: Config,
    pub tls: MakeRustlsConnect,
}

/// Parses `url` (`postgres://…` or `key=value …`). Errors name the
/// setting, never the URL (it carries the password).
pub(crate) fn parse(url: &str) -> Result<Target, StoreError> {
    let (driver_url, mode, root) = split(url)?;
    let config = Config::from_str(&driver_url)?;
    let check = match mode.as_deref() {
        Some("verify-full") => Check::ChainAndName,
        Some("verify-ca") => Check::Chain,
        _ if root.is_some() => Check::Chain,
        _ => Check::Nothing,
    };
    Ok(Target { config, tls: MakeRustlsConnect::new(client_config(check, root.as_deref())?) })
}

/// The URL without what only libpq knows, the `sslmode` asked for, and
/// `sslrootcert`.
fn split(url: &str) -> Result<(String, Option<String>, Option<PathBuf>), StoreError> {
    let mut mode = None;
    let mut root = None;
    let mut take = |key: &str, value: &str| -> Result<Option<String>, StoreError> {
        match key {
            "sslmode" => {
                let driver = match value {
                    "disable" | "prefer" | "require" => value,
                    "verify-ca" | "verify-full" => "require",
                    _ => {
                        return Err(bad(format!(
                            "sslmode={value} is not one of disable, prefer, require, verify-ca, verify-full"
                        )));
                    }
                };
                mode = Some(value.to_owned());
                Ok(Some(format!("sslmode={driver}")))
            }
            "sslrootcert" => {
                root = Some(PathBuf::from(value));
                Ok(None)
            }
            _ => Ok(Some(format!("{key}={value}"))),
        }
    };
    let driver = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            None => url.to_owned(),
            Some((base, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&').filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    let value = percent_decode(v);
                    if let Some(p) = take(k, &value)? {
                        // What was decoded to be read goes back as it came.
                        kept.push(if k == "sslmode" { p } else { pair.to_owned() });
                    }
                }
                if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) }
            }
        }
    } else {
        let mut kept = Vec::new();
        for pair in url.split_whitespace() {
            match pair.split_once('=') {
                Some((k, v)) => {
                    if let Some(p) = take(k.trim(), v.trim_matches('\''))? {
                        kept.push(if k.trim() == "sslmode" { p } else { pair.to_owned() });
                    }
                }
                None => kept.push(pair.to_owned()),
            }
        }
        kept.join(" ")
    };
    Ok((driver, mode, root))
}

/// `%XX` escapes of a URL's query value (a path may hold them).
fn percent_decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn bad(why: String) -> StoreError {
    StoreError::Tls(why)
}

fn client_config(check: Check, root: Option<&Path>) -> Result<ClientConfig, StoreError> {
    let builder = ClientConfig::builder_with_provider(faena_common::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?;
    let chain = match check {
        Check::Nothing => None,
        Check::Chain | Check::ChainAndName => {
            let roots = faena_common::tls::roots(root).map_err(|e| bad(e.to_string()))?;
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), faena_common::tls::provider())
                .build()
                .map_err(|e| bad(e.to_string()))?;
            Some(webpki)
        }
    };
    let verifier = Verifier {
        chain,
        check_name: check == Check::ChainAndName,
        algs: faena_common::tls::provider().signature_verification_algorithms,
    };
    Ok(builder.dangerous().with_custom_certificate_verifier(Arc::new(verifier)).with_no_client_auth())
}

/// The server's certificate checked as `sslmode` asks: not at all
/// (`prefer`, `require`: the channel is encrypted, the handshake's
/// signatures still checked), its chain (`verify-ca`), or its chain and
/// name (`verify-full`).
#[derive(Debug)]
struct Verifier {
    chain: Option<Arc<WebPkiServerVerifier>>,
    check_name: bool,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else { return Ok(ServerCertVerified::assertion()) };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_settings_are_taken_out_of_the_url() {
        let (url, mode, root) =
            split("postgres://u:p@h:5/db?sslmode=verify-full&sslrootcert=%2Frun%2Fca.pem&application_name=x").unwrap();
        assert_eq!(url, "postgres://u:p@h:5/db?sslmode=require&application_name=x");
        assert_eq!(mode.as_deref(), Some("verify-full"));
        assert_eq!(root, Some(PathBuf::from("/run/ca.pem")));

        let (url, mode, root) = split("host=h user=u sslmode=verify-ca sslrootcert=/ca.pem").unwrap();
        assert_eq!(url, "host=h user=u sslmode=require");
        assert_eq!(mode.as_deref(), Some("verify-ca"));
        assert_eq!(root, Some(PathBuf::from("/ca.pem")));

        let (url, mode, root) = split("postgres://h/db").unwrap();
        assert_eq!((url.as_str(), mode, root), ("postgres://h/db", None, None));
    }

    #[test]
    fn an_unknown_sslmode_is_refused_without_the_url() {
        let Err(err) = split("postgres://u:secret@h/db?sslmode=allow-ish") else { panic!("accepted") };
        let text = err.to_string();
        assert!(text.contains("sslmode=allow-ish"), "{text}");
        assert!(!text.contains("secret"), "{text}");
    }

    #[test]
    fn a_missing_root_file_is_a_clear_error() {
        let Err(err) = parse("postgres://h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem") else {
            panic!("accepted")
        };
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }
}

/// Against a real server that serves TLS with a certificate for
/// `localhost` only, signed by a CA of the harness's own.
#[cfg(test)]
mod server_tests {
    use faena_proto::ids::JobId;

    use crate::harness::Postgres;
    use crate::{Retention, Store};

    fn url(pg: &Postgres, host: &str, mode: &str, root: Option<&std::path::Path>) -> String {
        let base = pg.url().replacen("127.0.0.1", host, 1);
        match root {
            Some(r) => format!("{base}?sslmode={mode}&sslrootcert={}", r.display()),
            None => format!("{base}?sslmode={mode}"),
        }
    }

    /// How many of the store's own connections use TLS, and how many do not.
    fn ssl_connections(pg: &Postgres) -> (String, String) {
        let count = |ssl: bool| {
            pg.sql(&format!(
                "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
                 WHERE a.application_name = 'faena-master' AND s.ssl = {ssl}"
            ))
        };
        (count(true), count(false))
    }

    #[tokio::test]
    async fn verify_full_connects_over_tls_to_the_name_the_certificate_holds() {
        let pg = Postgres::start_tls(&["localhost"]);
        let store = Store::connect(&url(&pg, "localhost", "verify-full", Some(&pg.ca_file())), Retention::OFF)
            .await
            .expect("connects");
        assert_eq!(store.get(JobId::new()).await.expect("reads over TLS"), None);
        let (tls, plain) = ssl_connections(&pg);
        assert_ne!(tls, "0", "no TLS connection");
        assert_eq!(plain, "0", "a connection in the clear");
    }

    #[tokio::test]
    async fn verify_full_refuses_a_name_the_certificate_does_not_hold_and_verify_ca_allows_it() {
        let pg = Postgres::start_tls(&["localhost"]);
        let Err(err) = Store::connect(&url(&pg, "127.0.0.1", "verify-full", Some(&pg.ca_file())), Retention::OFF).await
        else {
            panic!("connected to a name the certificate does not hold")
        };
        assert!(!err.to_string().contains("pw-"), "the error shows the password: {err}");
        Store::connect(&url(&pg, "127.0.0.1", "verify-ca", Some(&pg.ca_file())), Retention::OFF)
            .await
            .expect("verify-ca checks the chain only");
    }

    #[tokio::test]
    async fn another_ca_is_refused_and_require_encrypts_without_checking() {
        let pg = Postgres::start_tls(&["localhost"]);
        let other = Postgres::start_tls(&["localhost"]);
        let Err(_) = Store::connect(&url(&pg, "localhost", "verify-ca", Some(&other.ca_file())), Retention::OFF).await
        else {
            panic!("trusted a certificate another CA signed")
        };
        let store =
            Store::connect(&url(&pg, "127.0.0.1", "require", None), Retention::OFF).await.expect("require connects");
        assert_eq!(store.get(JobId::new()).await.expect("reads over TLS"), None);
        let (tls, plain) = ssl_connections(&pg);
        assert_ne!(tls, "0");
        assert_eq!(plain, "0");
    }
}
