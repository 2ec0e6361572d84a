//! What a leading master writes of itself in the store's lease (its
//! `holder` column): where the other masters forward clients and where a
//! standby's Stratum pool follows the leader's. Written by the leader,
//! read by every standby; JSON, so a newer master may add fields.

use serde::{Deserialize, Serialize};

/// What a leader says of itself in the store's lease: where the other
/// masters forward to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// Where it serves the web; also its name ([`Holder::name`]).
    pub http: String,
    pub grpc: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stratum: Option<String>,
    /// Its web port speaks HTTPS: forwarded connection by connection.
    #[serde(default)]
    pub web_tls: bool,
}

impl Holder {
    /// Its name in logs, `/healthz` and the lease: the address it serves
    /// the web on, which no other live master can have. A master started
    /// again on the same address takes its own lease back at once.
    pub fn name(&self) -> &str {
        &self.http
    }

    /// The lease's `holder` column as written by [`Holder::to_string`];
    /// none for anything else (no master led yet).
    pub fn parse(column: Option<&str>) -> Option<Self> {
        serde_json::from_str(column?).ok()
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&serde_json::to_string(self).map_err(|_| std::fmt::Error)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_reads_back_what_it_wrote_and_nothing_else() {
        let h = Holder { http: "10.0.0.5:8888".into(), grpc: "10.0.0.5:50051".into(), stratum: None, web_tls: false };
        assert_eq!(Holder::parse(Some(&h.to_string())), Some(h));
        assert_eq!(Holder::parse(None), None);
        assert_eq!(Holder::parse(Some("a master of an older build")), None);
    }
}
