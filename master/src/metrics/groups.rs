//! `faena_group_jobs{group,state}`: each group's queued and running jobs.
//!
//! A master may hold thousands of groups (one a tenant or an API key). As a
//! label family, each scrape cleared and rebuilt two label sets a group
//! (their strings, their hashes, a map's entries) on the coordinator's one
//! task. Here the coordinator copies the counts into a list it keeps (its
//! strings reused from the scrape before), and the scrape's own task
//! encodes them from it.

use std::sync::Mutex;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;

/// One group's counts.
#[derive(Debug, Default)]
struct Count {
    group: String,
    queued: i64,
    running: i64,
}

/// The groups' counts as of the last [`GroupJobs::set`].
#[derive(Debug, Default)]
pub struct GroupJobs(Mutex<Vec<Count>>);

impl GroupJobs {
    /// The counts from now on: `(group, queued, running)` of each group
    /// (groups left out are gone from the next scrape).
    pub fn set<'a>(&self, counts: impl IntoIterator<Item = (&'a str, usize, u32)>) {
        let mut kept = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut n = 0;
        for (group, queued, running) in counts {
            if n == kept.len() {
                kept.push(Count::default());
            }
            let c = &mut kept[n];
            c.group.clear();
            c.group.push_str(group);
            (c.queued, c.running) = (i64::try_from(queued).unwrap_or(i64::MAX), i64::from(running));
            n += 1;
        }
        kept.truncate(n);
    }
}

impl Collector for GroupJobs {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let kept = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if kept.is_empty() {
            // As a family with no label sets: not written at all.
            return Ok(());
        }
        let mut metric = encoder.encode_descriptor(
            "group_jobs",
            "Each group's jobs queued and running, by group and state",
            None,
            ConstGauge::new(0i64).metric_type(),
        )?;
        for c in kept.iter() {
            for (state, n) in [("queued", c.queued), ("running", c.running)] {
                let labels = [("group", c.group.as_str()), ("state", state)];
                ConstGauge::new(n).encode(metric.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use prometheus_client::encoding::text::encode;
    use prometheus_client::registry::Registry;

    use super::*;

    /// A scrape of a registry that holds `jobs`.
    fn scrape(jobs: &Arc<GroupJobs>) -> String {
        let mut registry = Registry::with_prefix("faena");
        registry.register_collector(Box::new(jobs.clone()));
        let mut out = String::new();
        encode(&mut out, &registry).expect("encodes");
        out
    }

    #[test]
    fn each_group_has_its_two_counts_and_emptied_groups_go() {
        let jobs = Arc::new(GroupJobs::default());
        jobs.set([("tenant-a", 2, 1), ("tenant-b", 0, 3)]);
        let out = scrape(&jobs);
        assert!(out.contains("# TYPE faena_group_jobs gauge"), "{out}");
        for line in [
            r#"faena_group_jobs{group="tenant-a",state="queued"} 2"#,
            r#"faena_group_jobs{group="tenant-a",state="running"} 1"#,
            r#"faena_group_jobs{group="tenant-b",state="queued"} 0"#,
            r#"faena_group_jobs{group="tenant-b",state="running"} 3"#,
        ] {
            assert!(out.lines().any(|l| l == line), "{line} in {out}");
        }
        // A shorter list reuses the first entry and drops the second.
        jobs.set([("c", 5, 0)]);
        let out = scrape(&jobs);
        assert!(out.lines().any(|l| l == r#"faena_group_jobs{group="c",state="queued"} 5"#), "{out}");
        assert!(!out.contains("tenant"), "{out}");
        // No groups: not written at all, as an empty family was not.
        jobs.set([]);
        assert!(!scrape(&jobs).contains("group_jobs"));
    }
}
