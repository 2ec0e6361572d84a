//! Every MQTT topic Faena uses, built and parsed in this one place.
//!
//! | topic | publisher | QoS / flags |
//! |---|---|---|
//! | `{p}/workers/{id}/jobs` | master | 1 |
//! | `{p}/workers/{id}/control` | master | 1 |
//! | `{p}/workers/{id}/status` | worker | 1, retained, last will |
//! | `{p}/master/status` | master | 1, retained, last will |
//! | `{p}/config` | master | 1, retained, signed |
//! | `{p}/logs` | everyone | 0 |

use crate::WireError;
use crate::ids::WorkerId;

/// The topic namespace, `faena` unless configured otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
}

/// What a concrete topic string refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topic {
    WorkerJobs(WorkerId),
    WorkerControl(WorkerId),
    WorkerStatus(WorkerId),
    MasterStatus,
    /// The live configuration ([`crate::settings::SignedConfig`]).
    Config,
    Logs,
}

impl Default for Topics {
    fn default() -> Self {
        Self { prefix: "faena".into() }
    }
}

impl Topics {
    /// A prefix is one or more topic levels without wildcards.
    pub fn new(prefix: &str) -> Result<Self, WireError> {
        let bad = prefix.is_empty()
            || prefix.starts_with('/')
            || prefix.ends_with('/')
            || prefix.contains(['+', '#', '\0'])
            || prefix.split('/').any(str::is_empty);
        if bad {
            return Err(WireError::Topic(prefix.to_owned()));
        }
        Ok(Self { prefix: prefix.to_owned() })
    }

    pub fn worker_jobs(&self, w: &WorkerId) -> String {
        format!("{}/workers/{w}/jobs", self.prefix)
    }

    pub fn worker_control(&self, w: &WorkerId) -> String {
        format!("{}/workers/{w}/control", self.prefix)
    }

    pub fn worker_status(&self, w: &WorkerId) -> String {
        format!("{}/workers/{w}/status", self.prefix)
    }

    pub fn master_status(&self) -> String {
        format!("{}/master/status", self.prefix)
    }

    pub fn config(&self) -> String {
        format!("{}/config", self.prefix)
    }

    pub fn logs(&self) -> String {
        format!("{}/logs", self.prefix)
    }

    /// Filter matching every worker's status topic.
    pub fn all_worker_status(&self) -> String {
        format!("{}/workers/+/status", self.prefix)
    }

    pub fn build(&self, topic: &Topic) -> String {
        match topic {
            Topic::WorkerJobs(w) => self.worker_jobs(w),
            Topic::WorkerControl(w) => self.worker_control(w),
            Topic::WorkerStatus(w) => self.worker_status(w),
            Topic::MasterStatus => self.master_status(),
            Topic::Config => self.config(),
            Topic::Logs => self.logs(),
        }
    }

    pub fn parse(&self, topic: &str) -> Result<Topic, WireError> {
        let err = || WireError::Topic(topic.to_owned());
        let rest = topic.strip_prefix(self.prefix.as_str()).and_then(|r| r.strip_prefix('/')).ok_or_else(err)?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            ["logs"] => Ok(Topic::Logs),
            ["config"] => Ok(Topic::Config),
            ["master", "status"] => Ok(Topic::MasterStatus),
            ["workers", id, leaf] => {
                let w = WorkerId::parse(id).map_err(|_| err())?;
                match *leaf {
                    "jobs" => Ok(Topic::WorkerJobs(w)),
                    "control" => Ok(Topic::WorkerControl(w)),
                    "status" => Ok(Topic::WorkerStatus(w)),
                    _ => Err(err()),
                }
            }
            _ => Err(err()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_topic_round_trips() {
        let t = Topics::new("acme/faena").expect("valid prefix");
        let w = WorkerId::parse("w-1").expect("valid id");
        for topic in [
            Topic::WorkerJobs(w.clone()),
            Topic::WorkerControl(w.clone()),
            Topic::WorkerStatus(w.clone()),
            Topic::MasterStatus,
            Topic::Config,
            Topic::Logs,
        ] {
            let s = t.build(&topic);
            assert!(s.starts_with("acme/faena/"));
            assert_eq!(t.parse(&s).ok(), Some(topic));
        }
        assert_eq!(Topics::default().worker_jobs(&w), "faena/workers/w-1/jobs");
    }

    #[test]
    fn garbage_topics_are_errors() {
        let t = Topics::default();
        for bad in [
            "",
            "faena",
            "faena/",
            "other/logs",
            "faena/workers/a/b/jobs",
            "faena/workers/+/jobs",
            "faena/workers/w/unknown",
            "faena/master",
            "faenax/logs",
        ] {
            assert!(t.parse(bad).is_err(), "{bad:?} parsed");
        }
        for bad in ["", "/a", "a/", "a//b", "a/+", "#"] {
            assert!(Topics::new(bad).is_err(), "prefix {bad:?} accepted");
        }
    }
}
