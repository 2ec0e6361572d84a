//! The live configuration's signature: HMAC-SHA256 over the published
//! document, under a key derived from the cluster token (itself an HMAC of a
//! fixed label, so the key signs nothing else). Only the master and the
//! workers hold the token; a broker account, even one that may publish,
//! cannot make a configuration a worker takes.

use aws_lc_rs::hmac;
use faena_proto::secret::Secret;
use faena_proto::settings::{ClusterConfig, SignedConfig};

const LABEL: &[u8] = b"faena-config-v1";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    #[error("bad signature: not signed by this cluster's master (another cluster token, or forged)")]
    Signature,
    #[error("signed, but not a configuration document: {0}")]
    Document(String),
}

fn key(cluster_token: &Secret) -> hmac::Key {
    let root = hmac::Key::new(hmac::HMAC_SHA256, cluster_token.expose().as_bytes());
    hmac::Key::new(hmac::HMAC_SHA256, hmac::sign(&root, LABEL).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

/// The document as the master publishes it.
pub fn seal(cluster_token: &Secret, config: &ClusterConfig) -> SignedConfig {
    // A struct of maps and numbers always serialises.
    let doc = serde_json::to_string(config).unwrap_or_default();
    let sig = hex(hmac::sign(&key(cluster_token), doc.as_bytes()).as_ref());
    SignedConfig { doc, sig }
}

/// The document, if the master of this cluster signed it (constant-time check).
pub fn open(cluster_token: &Secret, signed: &SignedConfig) -> Result<ClusterConfig, OpenError> {
    let tag = unhex(&signed.sig).ok_or(OpenError::Signature)?;
    hmac::verify(&key(cluster_token), signed.doc.as_bytes(), &tag).map_err(|_| OpenError::Signature)?;
    serde_json::from_str(&signed.doc).map_err(|e| OpenError::Document(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_token_opens_it_and_any_change_breaks_it() {
        let token = Secret::new("cluster-token");
        let config = ClusterConfig { version: 3, ..ClusterConfig::default() };
        let signed = seal(&token, &config);
        assert_eq!(open(&token, &signed), Ok(config));
        assert_eq!(open(&Secret::new("another"), &signed), Err(OpenError::Signature));
        let forged = SignedConfig { doc: signed.doc.replace("3", "4"), ..signed.clone() };
        assert_eq!(open(&token, &forged), Err(OpenError::Signature));
        for sig in ["", "zz", "abc", "ü0"] {
            assert_eq!(open(&token, &SignedConfig { sig: sig.into(), ..signed.clone() }), Err(OpenError::Signature));
        }
        let sig = hex(hmac::sign(&key(&token), b"[]").as_ref());
        assert!(matches!(open(&token, &SignedConfig { doc: "[]".into(), sig }), Err(OpenError::Document(_))));
    }
}
