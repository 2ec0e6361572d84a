//! Recurring schedules: a standard 5-field cron (through `croner`) in a
//! time zone (through `chrono-tz`; UTC unless named) that makes an ordinary
//! job at each firing, linked to it (`schedule` on the job). Each firing is
//! stored with the job it makes, in the same commit (the job's Insert
//! carries it), so a firing happens once across restarts and takeovers;
//! one that makes no job is recorded on its own. Missed firings (the
//! master was down) follow `catch_up`; a firing while the previous one's
//! job has not ended follows `overlap`.
//!
//! Daylight saving time is as `croner` handles it: a fixed-time schedule in
//! a skipped hour fires right after the gap, in a repeated hour once; an
//! interval schedule skips the gap and fires in both passes of a repeated
//! hour.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use faena_proto::ids::JobId;
use faena_proto::jobs::{JobKind, JobSpec, Priority};
use faena_proto::options::{JobOptions, RetryPolicy};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Now;
use super::deadlines::Deadlines;

/// Most schedules a master keeps.
pub const MAX_SCHEDULES: usize = 10_000;
/// Most missed firings `catch_up: "all"` makes at once (the newest).
pub const MAX_CATCH_UP: usize = 100;
/// How late a firing may still be made under `catch_up: "none"`.
pub const ON_TIME: Duration = Duration::from_secs(60);

/// What a firing does while the previous firing's job has not ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Overlap {
    /// Makes no job (the default, as Temporal's).
    #[default]
    Skip,
    /// Makes a job that waits for the previous one to end.
    Queue,
    /// Makes a job as if nothing ran.
    Allow,
}

/// What the firings missed while no master led do once one leads again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CatchUp {
    /// None of them.
    None,
    /// One job, for the newest (the default).
    #[default]
    One,
    /// One job each, the newest 100 at most.
    All,
}

/// The job each firing makes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduledJob {
    pub kind: String,
    #[serde(default)]
    pub params: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
}

/// A schedule as `POST /api/schedules` takes it (less its name) and the
/// store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    pub cron: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    pub job: ScheduledJob,
    #[serde(default)]
    pub overlap: Overlap,
    #[serde(default)]
    pub catch_up: CatchUp,
}

/// A schedule checked: its cron, zone and job parsed.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub spec: ScheduleSpec,
    cron: Cron,
    tz: Tz,
    job: JobSpec,
}

impl Compiled {
    /// Checks `spec` as of `now_ms`: a cron that never fires is refused.
    pub fn new(spec: ScheduleSpec, now_ms: u64) -> Result<Self, String> {
        let parser = CronParser::builder().seconds(Seconds::Disallowed).year(Year::Disallowed).build();
        let cron = parser
            .parse(&spec.cron)
            .map_err(|e| format!("cron {:?}: {e} (5 fields: minute hour day month weekday)", spec.cron))?;
        let zone = spec.timezone.as_deref().unwrap_or("UTC");
        let tz =
            Tz::from_str(zone).map_err(|_| format!("timezone {zone:?} is not an IANA zone (Europe/Madrid, UTC…)"))?;
        let job = JobSpec::parse(&spec.job.kind, spec.job.params.clone()).map_err(|e| format!("job: {e}"))?;
        if let JobSpec::AiQuery(p) = &job
            && p.own_key
        {
            return Err("job: a schedule cannot carry an API key; its ai.query jobs use the workers' providers".into());
        }
        if job.kind() == JobKind::RandomxMine && (spec.job.timeout_ms.is_some() || spec.job.retry.is_some()) {
            return Err("job: a randomx.mine job takes no timeout_ms or retry".into());
        }
        let opts = JobOptions {
            group: spec.job.group.clone(),
            timeout_ms: spec.job.timeout_ms,
            retry: spec.job.retry,
            ..Default::default()
        };
        opts.check().map_err(|e| format!("job: {e}"))?;
        let compiled = Self { spec, cron, tz, job };
        if compiled.after(now_ms).is_none() {
            return Err(format!("cron {:?} never fires", compiled.spec.cron));
        }
        Ok(compiled)
    }

    /// The first firing after `ms` (wall clock), if there is one.
    pub fn after(&self, ms: u64) -> Option<u64> {
        let start: DateTime<Tz> = self.tz.timestamp_millis_opt(i64::try_from(ms).ok()?).single()?;
        let next = self.cron.find_next_occurrence(&start, false).ok()?;
        u64::try_from(next.timestamp_millis()).ok()
    }

    /// The firings in (`from`, `to`], the newest `max` of them.
    pub fn between(&self, from: u64, to: u64, max: usize) -> Vec<u64> {
        let mut out = std::collections::VecDeque::new();
        let mut at = from;
        while let Some(next) = self.after(at).filter(|n| *n <= to) {
            if out.len() == max {
                out.pop_front();
            }
            out.push_back(next);
            at = next;
        }
        out.into()
    }

    /// The job a firing for `at_ms` makes.
    pub fn job(&self, name: &str, at_ms: u64, after: Option<JobId>) -> super::NewJob {
        let opts = JobOptions {
            group: self.spec.job.group.clone(),
            timeout_ms: self.spec.job.timeout_ms,
            retry: self.spec.job.retry,
            schedule: Some(name.to_owned()),
            fired_for_ms: Some(at_ms),
            after: after.into_iter().collect(),
            after_policy: faena_proto::options::AfterPolicy::Always,
            ..Default::default()
        };
        super::NewJob {
            opts: Some(std::sync::Arc::new(opts)),
            ..super::NewJob::new(JobId::new(), self.job.clone(), self.spec.job.priority.unwrap_or_default())
        }
    }
}

/// One schedule: checked, its last firing, its next.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub compiled: Compiled,
    pub last_ms: u64,
    pub last_job: Option<JobId>,
    pub next_ms: Option<u64>,
}

/// A schedule as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScheduleView {
    pub name: String,
    #[serde(flatten)]
    pub spec: ScheduleSpec,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_run_at: Option<String>,
    pub last_fired_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_job: Option<JobId>,
}

#[derive(Debug, Default)]
pub struct Schedules {
    pub(super) all: BTreeMap<String, Schedule>,
    /// By when each fires next.
    pub(super) due: Deadlines<String>,
}

impl Schedules {
    /// Sets when `name` fires next, as of `now`.
    pub(super) fn arm(&mut self, name: &str, now: Now) {
        let Some(s) = self.all.get_mut(name) else { return };
        s.next_ms = s.compiled.after(s.last_ms);
        match s.next_ms {
            Some(at) => self.due.set(name.to_owned(), now.mono + Duration::from_millis(at.saturating_sub(now.wall_ms))),
            None => {
                self.due.remove(&name.to_owned());
            }
        }
    }

    pub fn view(&self, name: &str) -> Option<ScheduleView> {
        let s = self.all.get(name)?;
        Some(ScheduleView {
            name: name.to_owned(),
            spec: s.compiled.spec.clone(),
            next_run_at: s.next_ms.map(faena_store_contract::rfc3339),
            last_fired_at: faena_store_contract::rfc3339(s.last_ms),
            last_job: s.last_job,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(cron: &str, tz: Option<&str>) -> ScheduleSpec {
        ScheduleSpec {
            cron: cron.into(),
            timezone: tz.map(str::to_owned),
            job: ScheduledJob {
                kind: "noop".into(),
                params: Value::Null,
                priority: None,
                group: None,
                timeout_ms: None,
                retry: None,
            },
            overlap: Overlap::default(),
            catch_up: CatchUp::default(),
        }
    }

    fn ms(s: &str) -> u64 {
        humantime::parse_rfc3339(s)
            .expect("time")
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis() as u64
    }

    #[test]
    fn a_cron_fires_in_its_zone_and_one_that_never_fires_is_refused() {
        let now = ms("2026-11-24T10:30:00Z");
        let hourly = Compiled::new(spec("0 * * * *", None), now).expect("valid");
        assert_eq!(hourly.after(now), Some(ms("2026-11-24T11:00:00Z")));
        // 09:00 in Madrid (UTC+1 in November).
        let madrid = Compiled::new(spec("0 9 * * *", Some("Europe/Madrid")), now).expect("valid");
        assert_eq!(madrid.after(now), Some(ms("2026-11-25T08:00:00Z")));
        assert_eq!(
            hourly.between(now, ms("2026-11-24T14:00:00Z"), 2),
            vec![ms("2026-11-24T13:00:00Z"), ms("2026-11-24T14:00:00Z")]
        );
        for (cron, says) in
            [("0 0 31 2 *", "never fires"), ("61 * * * *", "cron"), ("* * * * * *", "cron"), ("", "cron")]
        {
            let err = Compiled::new(spec(cron, None), now).expect_err(cron);
            assert!(err.contains(says), "{cron}: {err}");
        }
        assert!(Compiled::new(spec("0 * * * *", Some("Mars/Olympus")), now).expect_err("zone").contains("IANA"));
    }

    #[test]
    fn daylight_saving_is_as_croner_handles_it() {
        // Europe/Madrid springs forward at 02:00 on 2027-03-28: 02:30 does not exist.
        let before = ms("2027-03-27T12:00:00Z");
        let fixed = Compiled::new(spec("30 2 * * *", Some("Europe/Madrid")), before).expect("valid");
        assert_eq!(fixed.after(before), Some(ms("2027-03-28T01:00:00Z")), "right after the gap: 03:00 CEST");
        // It falls back at 03:00 on 2026-10-25: 02:30 happens twice, fixed fires once.
        let before = ms("2026-10-24T12:00:00Z");
        let fixed = Compiled::new(spec("30 2 * * *", Some("Europe/Madrid")), before).expect("valid");
        let first = fixed.after(before).expect("fires");
        assert_eq!(first, ms("2026-10-25T00:30:00Z"));
        assert_eq!(fixed.after(first), Some(ms("2026-10-26T01:30:00Z")), "not again in the repeated hour");
    }
}
