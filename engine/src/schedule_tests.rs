//! Recurring schedules under the fake clock: on time and once, overlap,
//! catch-up after the master was down.
#![allow(clippy::expect_used)]

use std::collections::HashMap;
use std::time::Duration;

use faena_proto::jobs::{JobKind, JobState};
use faena_store_contract::Firing;
use serde_json::{Value, json};

use super::schedules::{CatchUp, Overlap, ScheduleSpec, ScheduledJob};
use super::tests::Harness;
use super::*;

const MINUTE: u64 = 60_000;

fn every_minute(overlap: Overlap, catch_up: CatchUp) -> ScheduleSpec {
    ScheduleSpec {
        cron: "* * * * *".into(),
        timezone: None,
        job: ScheduledJob {
            kind: "noop".into(),
            params: Value::Null,
            priority: None,
            group: None,
            timeout_ms: None,
            retry: None,
        },
        overlap,
        catch_up,
    }
}

/// A harness whose wall clock sits on a minute boundary.
fn harness() -> Harness {
    let mut h = Harness::new(1_000);
    h.now.wall_ms = 1_700_000_040_000 - 1_700_000_040_000 % MINUTE;
    h
}

fn made(effects: &[Effect]) -> Vec<(JobId, u64)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Store(StoreOp::Insert { id, opts: Some(o), .. }) => Some((*id, o.fired_for_ms?)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_schedule_fires_on_time_once_and_skips_while_its_job_runs() {
    let mut h = harness();
    let view = h.engine.put_schedule(h.now, "tick", every_minute(Overlap::Skip, CatchUp::One)).expect("valid");
    assert_eq!(view.next_run_at, Some(faena_store_contract::rfc3339(h.now.wall_ms + MINUTE)));
    assert_eq!(h.engine.next_wake(), Some(h.now.mono + Duration::from_millis(MINUTE)));
    h.engine.take_effects();
    h.advance(Duration::from_millis(MINUTE));
    h.engine.wake(h.now);
    let first = made(&h.engine.take_effects());
    assert_eq!(first.len(), 1, "one job for the firing");
    assert_eq!(first[0].1, h.now.wall_ms);
    assert_eq!(h.engine.view(&first[0].0).map(|v| v.state), Some(JobState::Queued));
    h.engine.wake(h.now);
    assert!(made(&h.engine.take_effects()).is_empty(), "the same firing is not made twice");
    // No worker runs noop: the first job is still queued at the next firing.
    h.advance(Duration::from_millis(MINUTE));
    h.engine.wake(h.now);
    let effects = h.engine.take_effects();
    assert!(made(&effects).is_empty(), "overlap skip");
    assert!(
        effects.iter().any(|e| matches!(e, Effect::Store(StoreOp::Fired { at_ms, .. }) if *at_ms == h.now.wall_ms))
    );
}

#[test]
fn overlap_queue_makes_the_next_job_wait_for_the_previous() {
    let mut h = harness();
    h.engine.put_schedule(h.now, "q", every_minute(Overlap::Queue, CatchUp::One)).expect("valid");
    let mut jobs = Vec::new();
    for _ in 0..2 {
        h.advance(Duration::from_millis(MINUTE));
        h.engine.wake(h.now);
        jobs.extend(made(&h.engine.take_effects()));
    }
    assert_eq!(jobs.len(), 2);
    assert_eq!(h.engine.view(&jobs[1].0).map(|v| v.state), Some(JobState::Waiting));
    let (w, _) = h.add_worker_of("w1", 1, &[JobKind::Noop]);
    let lease = h.dispatches().remove(0).1;
    assert_eq!(lease.job_id, jobs[0].0);
    h.engine.complete(h.now, &w, &lease, Outcome::Success(json!({}))).expect("done");
    assert_eq!(h.dispatches().remove(0).1.job_id, jobs[1].0, "then the queued one runs");
}

#[test]
fn missed_firings_follow_catch_up_after_a_restart() {
    for (catch_up, want) in [(CatchUp::None, 0), (CatchUp::One, 1), (CatchUp::All, 5)] {
        // Hourly, down for five hours, back ten minutes past the hour.
        let mut h = harness();
        h.now.wall_ms -= h.now.wall_ms % (60 * MINUTE);
        let last = h.now.wall_ms - 5 * 60 * MINUTE;
        let hour = h.now.wall_ms;
        h.now.wall_ms += 10 * MINUTE;
        let firings = HashMap::from([("s".to_owned(), Firing { at_ms: last, job: None })]);
        let hourly = ScheduleSpec { cron: "0 * * * *".into(), ..every_minute(Overlap::Allow, catch_up) };
        h.engine.restore_schedules(h.now, vec![("s".into(), hourly)], firings);
        assert_eq!(h.engine.next_wake(), Some(h.now.mono), "due at once");
        h.engine.wake(h.now);
        let effects = h.engine.take_effects();
        assert_eq!(made(&effects).len(), want, "{catch_up:?}");
        assert_eq!(h.engine.schedule_view("s").map(|v| v.last_fired_at), Some(faena_store_contract::rfc3339(hour)));
        assert_eq!(h.engine.next_wake(), Some(h.now.mono + Duration::from_millis(50 * MINUTE)));
        if want == 0 {
            assert!(effects.iter().any(|e| matches!(e, Effect::Store(StoreOp::Fired { .. }))), "let go, and recorded");
        }
    }
}

#[test]
fn a_schedule_that_cannot_hold_is_refused_and_deleting_stops_it() {
    let mut h = harness();
    let never = ScheduleSpec { cron: "0 0 30 2 *".into(), ..every_minute(Overlap::Skip, CatchUp::One) };
    assert!(
        matches!(h.engine.put_schedule(h.now, "x", never), Err(ScheduleError::Invalid(m)) if m.contains("never fires"))
    );
    h.engine.put_schedule(h.now, "x", every_minute(Overlap::Skip, CatchUp::One)).expect("valid");
    assert!(h.engine.delete_schedule("x"));
    assert!(!h.engine.delete_schedule("x"));
    assert_eq!(h.engine.next_wake(), None);
}
