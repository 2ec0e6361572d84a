//! What a job asks of the engine beyond its kind and parameters: when it
//! may start (`run_at`), what it waits for (`after`), the key it is unique
//! by, the group it is dispatched fairly within, how long an attempt may
//! take and how it is retried. Validated here, once, for every entry point;
//! stored with the job as [`JobOptions`] (its canonical form).

use serde::{Deserialize, Serialize};

use crate::WireError;
use crate::ids::JobId;

/// Most parents one job waits for.
pub const MAX_AFTER: usize = 100;
/// Longest `unique_key`, in bytes.
pub const MAX_UNIQUE_KEY: usize = 256;
/// Longest group or schedule name.
pub const MAX_NAME: usize = 64;
/// Furthest a job may be delayed: a year.
pub const MAX_DELAY_MS: u64 = 366 * 24 * 3_600_000;
/// Longest `unique_for`: a year, in seconds.
pub const MAX_UNIQUE_FOR_S: u64 = 366 * 24 * 3_600;
/// Longest `timeout_ms`: a day.
pub const MAX_TIMEOUT_MS: u64 = 24 * 3_600_000;
/// Shortest `timeout_ms`: below it a lease's round trip decides.
pub const MIN_TIMEOUT_MS: u64 = 100;
/// Most attempts a job's own retry policy may ask for.
pub const MAX_ATTEMPTS: u32 = 100;

/// What a dependent does when a parent does not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AfterPolicy {
    /// Ends `failed` with `dependency_failed` (the default).
    #[default]
    Succeeded,
    /// Runs once every parent has ended, however it ended.
    Always,
}

impl AfterPolicy {
    fn is_default(&self) -> bool {
        *self == Self::Succeeded
    }
}

/// A parent named on submit: a job id, or (in a batch) the index of
/// another job of the same batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AfterRef {
    Index(usize),
    Id(JobId),
}

/// How a job's failed attempts are retried.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, the first included: 1 never retries.
    pub max_attempts: u32,
    #[serde(default)]
    pub backoff: Backoff,
}

/// The wait before attempt n + 1: `initial_ms` × 2^(n − 1), at most
/// `max_ms`, less up to `jitter` of it at random.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Backoff {
    pub initial_ms: u64,
    pub max_ms: u64,
    /// 0.0..=1.0: the share of each wait taken off at random, so that jobs
    /// failing together do not retry together.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { initial_ms: 1_000, max_ms: 60_000, jitter: 0.0 }
    }
}

impl Backoff {
    /// The wait before the attempt after `attempts` failed ones; `random`
    /// is a uniform draw in 0.0..1.0.
    pub fn delay_ms(&self, attempts: u32, random: f64) -> u64 {
        let doublings = attempts.saturating_sub(1).min(40);
        let full = self.initial_ms.saturating_mul(1u64 << doublings).min(self.max_ms);
        full - (full as f64 * self.jitter * random.clamp(0.0, 1.0)) as u64
    }
}

impl RetryPolicy {
    pub fn check(&self) -> Result<(), WireError> {
        if !(1..=MAX_ATTEMPTS).contains(&self.max_attempts) {
            return Err(bad(format!("retry.max_attempts must be 1..={MAX_ATTEMPTS}")));
        }
        let b = &self.backoff;
        if b.max_ms > MAX_DELAY_MS || b.initial_ms > b.max_ms {
            return Err(bad(format!(
                "retry.backoff: initial_ms must be at most max_ms, and max_ms at most {MAX_DELAY_MS}"
            )));
        }
        if !(0.0..=1.0).contains(&b.jitter) {
            return Err(bad("retry.backoff.jitter must be 0.0..=1.0 (the share of each wait taken off at random)"));
        }
        Ok(())
    }
}

/// A job's options as stored with it: every field has the meaning of the
/// submit field of the same name; the default asks for nothing.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct JobOptions {
    /// Not before this (ms since the UNIX epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_at_ms: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<JobId>,
    #[serde(skip_serializing_if = "AfterPolicy::is_default")]
    pub after_policy: AfterPolicy,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unique_key: Option<String>,
    /// Seconds the key holds from submission, finished or not; none: while
    /// the job is not finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unique_for_s: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// The recurring schedule whose firing made this job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// The firing time it was made for (ms since the UNIX epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fired_for_ms: Option<u64>,
}

impl JobOptions {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Checks what one job's fields can say on their own (parents are
    /// checked against the other jobs by the master).
    pub fn check(&self) -> Result<(), WireError> {
        if self.after.len() > MAX_AFTER {
            return Err(bad(format!("after: a job waits for at most {MAX_AFTER} others")));
        }
        if let Some(key) = &self.unique_key
            && (key.is_empty() || key.len() > MAX_UNIQUE_KEY || key.chars().any(char::is_control))
        {
            return Err(bad(format!("unique_key must be 1..={MAX_UNIQUE_KEY} bytes without control characters")));
        }
        if self.unique_for_s.is_some() && self.unique_key.is_none() {
            return Err(bad("unique_for needs a unique_key"));
        }
        if self.unique_for_s.is_some_and(|s| !(1..=MAX_UNIQUE_FOR_S).contains(&s)) {
            return Err(bad(format!("unique_for must be 1..={MAX_UNIQUE_FOR_S} seconds")));
        }
        if let Some(group) = &self.group {
            check_name("group", group)?;
        }
        if let Some(schedule) = &self.schedule {
            check_name("schedule", schedule)?;
        }
        if self.timeout_ms.is_some_and(|t| !(MIN_TIMEOUT_MS..=MAX_TIMEOUT_MS).contains(&t)) {
            return Err(bad(format!("timeout_ms must be {MIN_TIMEOUT_MS}..={MAX_TIMEOUT_MS}")));
        }
        if let Some(retry) = &self.retry {
            retry.check()?;
        }
        Ok(())
    }
}

/// Why the engine itself ended a job `failed`: stored at the head of its
/// error (`"timeout: …"`) and shown apart as `error_code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// An attempt ran past the job's `timeout_ms` (its last, or every one).
    Timeout,
    /// A job it ran `after` did not succeed.
    DependencyFailed,
    /// No registered worker offered its kind in time.
    NoWorker,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 3] = [ErrorCode::Timeout, ErrorCode::DependencyFailed, ErrorCode::NoWorker];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Timeout => "timeout",
            ErrorCode::DependencyFailed => "dependency_failed",
            ErrorCode::NoWorker => "no_worker",
        }
    }

    /// The error text for this code.
    pub fn error(self, message: impl std::fmt::Display) -> String {
        format!("{}: {message}", self.as_str())
    }

    /// The code an error was made with, if the engine made it.
    pub fn of(error: &str) -> Option<Self> {
        let (head, _) = error.split_once(": ")?;
        Self::ALL.into_iter().find(|c| c.as_str() == head)
    }
}

/// A group's or a schedule's name: 1..=64 of `A-Z a-z 0-9 . _ : @ -`, so
/// it fits a URL path, a metric label and a log line as it is.
pub fn check_name(what: &str, name: &str) -> Result<(), WireError> {
    let ok = |c: char| c.is_ascii_alphanumeric() || "._:@-".contains(c);
    if name.is_empty() || name.len() > MAX_NAME || !name.chars().all(ok) {
        return Err(bad(format!("{what} must be 1..={MAX_NAME} characters of A-Z a-z 0-9 . _ : @ -, got {name:?}")));
    }
    Ok(())
}

fn bad(message: impl Into<String>) -> WireError {
    WireError::Invalid(message.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_and_jitter_only_shortens() {
        let b = Backoff { initial_ms: 100, max_ms: 1_000, jitter: 0.5 };
        assert_eq!([1, 2, 3, 4, 5, 90].map(|n| b.delay_ms(n, 0.0)), [100, 200, 400, 800, 1_000, 1_000]);
        assert_eq!(b.delay_ms(2, 1.0), 100);
        assert_eq!(b.delay_ms(2, 0.5), 150);
    }

    #[test]
    fn options_are_checked_field_by_field() {
        let ok = JobOptions { unique_key: Some("k".into()), group: Some("tenant-1".into()), ..Default::default() };
        assert!(ok.check().is_ok());
        let refused = [
            JobOptions { unique_key: Some(String::new()), ..Default::default() },
            JobOptions { unique_for_s: Some(5), ..Default::default() },
            JobOptions { group: Some("a b".into()), ..Default::default() },
            JobOptions { group: Some("g".repeat(65)), ..Default::default() },
            JobOptions { timeout_ms: Some(5), ..Default::default() },
            JobOptions { after: vec![JobId::new(); MAX_AFTER + 1], ..Default::default() },
            JobOptions {
                retry: Some(RetryPolicy { max_attempts: 0, backoff: Backoff::default() }),
                ..Default::default()
            },
            JobOptions {
                retry: Some(RetryPolicy { max_attempts: 3, backoff: Backoff { jitter: 2.0, ..Default::default() } }),
                ..Default::default()
            },
        ];
        for o in refused {
            assert!(o.check().is_err(), "{o:?}");
        }
    }

    #[test]
    fn error_codes_read_back_from_their_text() {
        let e = ErrorCode::DependencyFailed.error("job x failed");
        assert_eq!(e, "dependency_failed: job x failed");
        assert_eq!(ErrorCode::of(&e), Some(ErrorCode::DependencyFailed));
        assert_eq!(ErrorCode::of("worker said: timeout: no"), None);
    }

    #[test]
    fn default_options_store_as_nothing_and_parents_parse_as_ids_or_indexes() {
        assert_eq!(serde_json::to_string(&JobOptions::default()).unwrap(), "{}");
        let id = JobId::new();
        let refs: Vec<AfterRef> = serde_json::from_value(serde_json::json!([0, id.to_string()])).unwrap();
        assert_eq!(refs, vec![AfterRef::Index(0), AfterRef::Id(id)]);
    }
}
