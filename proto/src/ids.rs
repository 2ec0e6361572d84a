//! Identifier newtypes. Ids that appear in MQTT topics are validated so they
//! can never inject a level separator or a wildcard; a lease's fencing token
//! is a type of its own so it cannot be mixed up with other strings.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::WireError;

/// A job's id: a UUID v7, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub Uuid);

impl JobId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// A new id stored in the same shard as `other` (a mining job's unit
    /// beside its job, a retry beside the job it retries): its last byte,
    /// random in a UUID v7, is `other`'s. [`JobId::shard`] reads that byte,
    /// so the two share a shard whatever the store's number of shards.
    pub fn beside(other: JobId) -> Self {
        let mut bytes = *Uuid::now_v7().as_bytes();
        bytes[15] = other.0.as_bytes()[15];
        Self(Uuid::from_bytes(bytes))
    }

    /// Which of `shards` shards of a store holds this job: its last byte
    /// (random) modulo their number. Stored jobs never move, so this must
    /// not change.
    pub fn shard(&self, shards: usize) -> usize {
        usize::from(self.0.as_bytes()[15]) % shards.max(1)
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for JobId {
    type Err = WireError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(JobId).map_err(|_| WireError::Id(format!("{s:?} is not a job id (UUID)")))
    }
}

/// A process instance (a worker or master run); changes on every start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InstanceId(pub Uuid);

impl InstanceId {
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }
}

impl Default for InstanceId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for InstanceId {
    type Err = WireError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(InstanceId).map_err(|_| WireError::Id(format!("{s:?} is not an instance id (UUID)")))
    }
}

/// A worker's id: 1–64 characters of `[A-Za-z0-9_.-]`, safe as a topic level.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct WorkerId(String);

impl WorkerId {
    pub const MAX_LEN: usize = 64;
    /// Names the services' own broker accounts and client ids use: a worker
    /// by one of these names would take the master's or an observer's
    /// account, or its MQTT session.
    pub const RESERVED: [&str; 4] = ["faena-master", "master", "observer", "admin"];
    /// Workers' broker accounts are `worker:<id>`: no service account and no
    /// worker id (which has no `:`) can be named so.
    pub const ACCOUNT_PREFIX: &str = "worker:";

    pub fn parse(s: &str) -> Result<Self, WireError> {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
        if s.is_empty() || s.len() > Self::MAX_LEN || !s.chars().all(ok_char) {
            return Err(WireError::Id(format!("{s:?} is not a worker id (1-{} of A-Z a-z 0-9 _ . -)", Self::MAX_LEN)));
        }
        let lower = s.to_ascii_lowercase();
        if Self::RESERVED.contains(&lower.as_str()) || lower.starts_with("faena-internal") {
            return Err(WireError::Id(format!("{s:?} is reserved for Faena's own services; choose another worker id")));
        }
        Ok(Self(s.to_owned()))
    }

    /// The broker account this worker logs in with.
    pub fn broker_account(&self) -> String {
        format!("{}{}", Self::ACCOUNT_PREFIX, self.0)
    }

    /// The worker a broker account belongs to; None for any other account.
    pub fn from_broker_account(username: &str) -> Option<Self> {
        Self::parse(username.strip_prefix(Self::ACCOUNT_PREFIX)?).ok()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for WorkerId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        WorkerId::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for WorkerId {
    type Err = WireError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        WorkerId::parse(s)
    }
}

/// A lease's fencing token: random, issued with each dispatch, known only to
/// the master and the worker that holds the attempt. 1–128 printable ASCII
/// characters on the wire; a fresh one is 32 hex digits.
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct FencingToken(String);

impl FencingToken {
    pub const MAX_LEN: usize = 128;

    pub fn new() -> Self {
        Self(Uuid::new_v4().simple().to_string())
    }

    pub fn parse(s: &str) -> Result<Self, WireError> {
        if s.is_empty() || s.len() > Self::MAX_LEN || !s.chars().all(|c| c.is_ascii_graphic()) {
            return Err(WireError::Id(format!("a lease token is 1-{} printable ASCII characters", Self::MAX_LEN)));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for FencingToken {
    fn default() -> Self {
        Self::new()
    }
}

/// Tokens are credentials for one attempt: logs show only their start.
impl fmt::Debug for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FencingToken({}…)", self.0.get(..4).unwrap_or(""))
    }
}

impl<'de> Deserialize<'de> for FencingToken {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        FencingToken::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An id made beside another is in its shard for any number of shards,
    /// and ids spread over the shards.
    #[test]
    fn an_id_beside_another_shares_its_shard_and_ids_spread() {
        let mut seen = [0usize; 4];
        for _ in 0..400 {
            let job = JobId::new();
            let unit = JobId::beside(job);
            assert_ne!(job, unit);
            for n in 1..=16 {
                assert_eq!(unit.shard(n), job.shard(n), "{n} shards");
            }
            seen[job.shard(4)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "spread over 4 shards: {seen:?}");
        assert_eq!(JobId::new().shard(0), 0, "no shards reads as one");
    }

    #[test]
    fn fencing_tokens_are_random_bounded_and_not_printed_whole() {
        let (a, b) = (FencingToken::new(), FencingToken::new());
        assert_ne!(a, b);
        assert_eq!(FencingToken::parse(a.as_str()).ok(), Some(a.clone()));
        for bad in ["", "a b", &"x".repeat(129), "é"] {
            assert!(FencingToken::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(!format!("{a:?}").contains(a.as_str()));
    }

    #[test]
    fn worker_ids_reject_topic_syntax() {
        for bad in ["", "a/b", "a+b", "#", "x y", &"a".repeat(65)] {
            assert!(WorkerId::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(WorkerId::parse("node-1.eu_2").map(|w| w.to_string()).ok().as_deref(), Some("node-1.eu_2"));
        assert!(serde_json::from_str::<WorkerId>("\"a/b\"").is_err());
    }

    #[test]
    fn worker_ids_take_no_services_name_and_their_accounts_stand_apart() {
        for reserved in ["master", "faena-master", "observer", "admin", "MASTER", "faena-internal-1a2b"] {
            let e = WorkerId::parse(reserved).expect_err(reserved);
            assert!(e.to_string().contains("reserved"), "{e}");
        }
        let w = WorkerId::parse("master-2").expect("not a service's name");
        assert_eq!(w.broker_account(), "worker:master-2");
        assert_eq!(WorkerId::from_broker_account("worker:master-2"), Some(w));
        for service in ["master", "faena-master", "observer", "worker:", "worker:master", "w1"] {
            assert_eq!(WorkerId::from_broker_account(service), None, "{service}");
        }
    }

    #[test]
    fn job_ids_round_trip_and_sort_by_time() {
        let a = JobId::new();
        let b = JobId::new();
        assert!(a < b);
        assert_eq!(a.to_string().parse::<JobId>().ok(), Some(a));
        assert!("nope".parse::<JobId>().is_err());
    }
}
