//! What the cluster token vouches for, each under a key of its own derived
//! from the token (an HMAC of a fixed label, so a key signs nothing else):
//!
//! - the live configuration: HMAC-SHA256 over the published document. Only
//!   the master and the workers hold the token; a broker account, even one
//!   that may publish, cannot make a configuration a worker takes;
//! - a client's address, as a standby master forwarding the client's
//!   request tells the leader ([`vouch`]): the leader's per-address limits
//!   then count the client, not the standby, and no client can claim an
//!   address of its choosing;
//! - another master, on the masters' internal routes ([`peer_key`]).

use faena_proto::secret::Secret;
use faena_proto::settings::{ClusterConfig, SignedConfig};
use ring::hmac;

const LABEL: &[u8] = b"faena-config-v1";
const CLIENT_LABEL: &[u8] = b"faena-forwarded-client-v1";
const PEER_LABEL: &[u8] = b"faena-peer-master-v1";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    #[error("bad signature: not signed by this cluster's master (another cluster token, or forged)")]
    Signature,
    #[error("signed, but not a configuration document: {0}")]
    Document(String),
}

fn key(cluster_token: &Secret) -> hmac::Key {
    derived(cluster_token, LABEL)
}

fn derived(cluster_token: &Secret, label: &[u8]) -> hmac::Key {
    let root = hmac::Key::new(hmac::HMAC_SHA256, cluster_token.expose().as_bytes());
    hmac::Key::new(hmac::HMAC_SHA256, hmac::sign(&root, label).as_ref())
}

/// The header value a standby sends with a forwarded request: the
/// client's address and the cluster's signature of it (`ip;hex`).
pub fn vouch(cluster_token: &Secret, client: std::net::IpAddr) -> String {
    let addr = client.to_string();
    let sig = hex(hmac::sign(&derived(cluster_token, CLIENT_LABEL), addr.as_bytes()).as_ref());
    format!("{addr};{sig}")
}

/// The client's address in a header [`vouch`] made with this cluster's
/// token; none for anything else (constant-time check).
pub fn vouched(cluster_token: &Secret, header: &str) -> Option<std::net::IpAddr> {
    let (addr, sig) = header.split_once(';')?;
    let tag = unhex(sig)?;
    hmac::verify(&derived(cluster_token, CLIENT_LABEL), addr.as_bytes(), &tag).ok()?;
    addr.parse().ok()
}

/// What a master shows another on the internal routes between masters:
/// a key only the cluster token derives, which signs nothing else.
pub fn peer_key(cluster_token: &Secret) -> String {
    hex(hmac::sign(&derived(cluster_token, PEER_LABEL), b"peer").as_ref())
}

/// Whether `given` is this cluster's [`peer_key`] (constant-time check).
pub fn is_peer_key(cluster_token: &Secret, given: &str) -> bool {
    unhex(given).is_some_and(|tag| hmac::verify(&derived(cluster_token, PEER_LABEL), b"peer", &tag).is_ok())
}

/// SHA-256 of a high-entropy secret (an AI client's key), hex: what is
/// stored and looked up instead of the secret. A key has 256 random bits,
/// so a fast hash is enough (as for GitHub's tokens); a password would not be.
pub fn fingerprint(secret: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, secret.as_bytes()).as_ref())
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
    fn only_this_cluster_vouches_for_a_client_and_only_for_that_one() {
        let token = Secret::new("cluster-token");
        let client: std::net::IpAddr = "127.0.0.7".parse().unwrap_or_else(|_| unreachable!());
        let header = vouch(&token, client);
        assert_eq!(vouched(&token, &header), Some(client));
        assert_eq!(vouched(&Secret::new("another"), &header), None);
        let (_, sig) = header.split_once(';').unwrap_or_default();
        assert_eq!(vouched(&token, &format!("127.0.0.8;{sig}")), None, "another address, same signature");
        for junk in ["", "127.0.0.7", "127.0.0.7;", "127.0.0.7;zz", ";;", "ü;00"] {
            assert_eq!(vouched(&token, junk), None, "{junk:?}");
        }
        // The configuration's key signs no address.
        let config_sig = hex(hmac::sign(&key(&token), b"127.0.0.7").as_ref());
        assert_eq!(vouched(&token, &format!("127.0.0.7;{config_sig}")), None);
    }

    #[test]
    fn only_this_clusters_peer_key_is_one() {
        let token = Secret::new("cluster-token");
        let key = peer_key(&token);
        assert!(is_peer_key(&token, &key));
        assert!(!is_peer_key(&Secret::new("another"), &key));
        // Neither the token itself, nor what vouches for a client, nor junk.
        let client = vouch(&token, "127.0.0.7".parse().unwrap_or_else(|_| unreachable!()));
        for other in ["cluster-token", client.as_str(), "", "zz", &key[2..]] {
            assert!(!is_peer_key(&token, other), "{other:?}");
        }
    }

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
