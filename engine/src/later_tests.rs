//! Delayed jobs, dependencies, unique keys, timeouts and retry policies,
//! under the fake clock.
#![allow(clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use faena_proto::api::JobEvent;
use faena_proto::ids::JobId;
use faena_proto::jobs::{JobKind, JobSpec, JobState, Priority};
use faena_proto::mqtt::Control;
use faena_proto::options::{AfterPolicy, Backoff, JobOptions, RetryPolicy};
use serde_json::json;

use super::tests::Harness;
use super::*;

fn job(opts: JobOptions) -> NewJob {
    NewJob {
        opts: Some(Arc::new(opts)),
        ..NewJob::new(JobId::new(), JobSpec::Noop(Default::default()), Priority::Normal)
    }
}

fn submit(h: &mut Harness, opts: JobOptions) -> Accepted {
    let out = h.engine.submit(h.now, vec![job(opts)]).expect("accepted");
    out[0]
}

fn stored(effects: &[Effect]) -> Vec<(JobId, &'static str)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Store(StoreOp::Insert { id, state, .. }) => Some((*id, state.as_str())),
            Effect::Store(StoreOp::Released { id, state, .. }) => Some((*id, state.as_str())),
            Effect::Store(StoreOp::Finished { id, state, .. }) => Some((*id, state.as_str())),
            Effect::Store(StoreOp::Requeued { id, run_at_ms: Some(_), .. }) => Some((*id, "scheduled")),
            _ => None,
        })
        .collect()
}

fn dispatched(effects: &[Effect]) -> Vec<WorkUnitLite> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Dispatch { worker, unit, .. } => Some(WorkUnitLite {
                worker: worker.clone(),
                lease: LeaseRef { job_id: unit.job_id, attempt: unit.attempt, token: unit.token.clone() },
                parents: unit.parents.clone(),
            }),
            _ => None,
        })
        .collect()
}

struct WorkUnitLite {
    worker: faena_proto::ids::WorkerId,
    lease: LeaseRef,
    parents: Option<serde_json::Map<String, serde_json::Value>>,
}

#[test]
fn a_delayed_job_is_scheduled_until_its_time_and_wakes_the_engine_then() {
    let mut h = Harness::new(10);
    h.add_worker_of("w1", 1, &[JobKind::Noop]);
    let at = h.now.wall_ms + 10_000;
    let a = submit(&mut h, JobOptions { run_at_ms: Some(at), ..Default::default() });
    assert_eq!(a.state, Some(JobState::Scheduled));
    let effects = h.engine.take_effects();
    assert_eq!(stored(&effects), vec![(a.id, "scheduled")]);
    assert!(dispatched(&effects).is_empty(), "nothing runs before its time");
    assert_eq!(h.engine.next_wake(), Some(h.now.mono + Duration::from_secs(10)));
    let view = h.engine.view(&a.id).expect("active");
    assert_eq!((view.state, view.run_at_ms), (JobState::Scheduled, Some(at)));
    assert_eq!(h.engine.load(h.now).scheduled, 1);

    h.advance(Duration::from_millis(9_999));
    h.engine.wake(h.now);
    assert!(dispatched(&h.engine.take_effects()).is_empty());
    h.advance(Duration::from_millis(1));
    h.engine.wake(h.now);
    let effects = h.engine.take_effects();
    assert_eq!(stored(&effects), vec![(a.id, "queued")]);
    assert_eq!(dispatched(&effects).len(), 1, "queued and dispatched at its time");
    assert_eq!(h.engine.next_wake(), None);
}

#[test]
fn a_scheduled_job_can_be_cancelled_and_reprioritised() {
    let mut h = Harness::new(10);
    let at = h.now.wall_ms + 60_000;
    let a = submit(&mut h, JobOptions { run_at_ms: Some(at), ..Default::default() });
    assert_eq!(h.engine.reprioritise(h.now, a.id, Priority::High), Ok(a.id));
    assert_eq!(h.engine.view(&a.id).map(|v| (v.state, v.priority)), Some((JobState::Scheduled, Priority::High)));
    assert!(h.engine.cancel(h.now, a.id));
    assert_eq!(h.engine.next_wake(), None, "its timer went with it");
    assert_eq!(h.engine.load(h.now).scheduled, 0);
}

#[test]
fn a_dependent_waits_for_every_parent_and_gets_their_results() {
    let mut h = Harness::new(10);
    let (w, _) = h.add_worker_of("w1", 2, &[JobKind::Noop]);
    let (a, b) = (job(JobOptions::default()), job(JobOptions::default()));
    let c = job(JobOptions { after: vec![a.id, b.id], ..Default::default() });
    let (ida, idb, idc) = (a.id, b.id, c.id);
    // The dependent first: a batch is placed parents first.
    let out = h.engine.submit(h.now, vec![c, a, b]).expect("accepted");
    assert_eq!(out.iter().map(|x| x.id).collect::<Vec<_>>(), vec![idc, ida, idb], "answered in the batch's order");
    assert_eq!(out[0].state, Some(JobState::Waiting));
    let units = dispatched(&h.engine.take_effects());
    assert_eq!(units.len(), 2);
    for (n, u) in units.iter().enumerate() {
        h.engine.complete(h.now, &w, &u.lease, Outcome::Success(json!({"n": n}))).expect("done");
        let next = dispatched(&h.engine.take_effects());
        match n {
            0 => assert!(next.is_empty(), "one parent left"),
            _ => {
                assert_eq!(next.len(), 1);
                assert_eq!(next[0].lease.job_id, idc);
                let parents = next[0].parents.clone().expect("parents' results");
                assert_eq!(parents.len(), 2);
                assert!(
                    parents.values().any(|v| v == &json!({"n": 0})) && parents.values().any(|v| v == &json!({"n": 1}))
                );
            }
        }
    }
    let _ = w;
}

#[test]
fn a_failed_parent_dooms_its_dependents_in_a_chain_unless_they_run_always() {
    let mut h = Harness::new(10);
    let a = submit(&mut h, JobOptions::default());
    let b = submit(&mut h, JobOptions { after: vec![a.id], ..Default::default() });
    let c = submit(&mut h, JobOptions { after: vec![b.id], ..Default::default() });
    let d = submit(&mut h, JobOptions { after: vec![a.id], after_policy: AfterPolicy::Always, ..Default::default() });
    h.engine.take_effects();
    assert!(h.engine.cancel(h.now, a.id));
    let effects = h.engine.take_effects();
    let failed: Vec<(JobId, Option<String>)> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Store(StoreOp::Finished { id, state: JobState::Failed, error, .. }) => Some((*id, error.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(failed.iter().map(|f| f.0).collect::<Vec<_>>(), vec![b.id, c.id], "b, then c through b");
    assert!(failed.iter().all(|f| f.1.as_deref().is_some_and(|e| e.starts_with("dependency_failed: "))));
    assert!(effects.iter().any(|e| matches!(e, Effect::Notify { job, event: JobEvent::Failed { code: Some(c), .. } } if *job == b.id && c == "dependency_failed")));
    assert_eq!(h.engine.view(&d.id).map(|v| v.state), Some(JobState::Queued), "always runs once its parents ended");
}

#[test]
fn parents_are_checked_before_anything_is_made() {
    let mut h = Harness::new(10);
    let stranger = JobId::new();
    let err = h.engine.submit(h.now, vec![job(JobOptions { after: vec![stranger], ..Default::default() })]);
    assert_eq!(err.map(|_| ()), Err(SubmitError::UnknownParent(stranger)));
    let (mut x, mut y) = (job(JobOptions::default()), job(JobOptions::default()));
    Arc::make_mut(x.opts.as_mut().expect("opts")).after = vec![y.id];
    Arc::make_mut(y.opts.as_mut().expect("opts")).after = vec![x.id];
    let err = h.engine.submit(h.now, vec![x, y]).map(|_| ());
    assert!(matches!(err, Err(SubmitError::Cycle(_))), "{err:?}");
    assert!(h.engine.take_effects().is_empty(), "nothing was made");
    // A parent that ended long ago is known from the store.
    let old = JobId::new();
    let known = HashMap::from([(old, (JobState::Succeeded, Some(json!("old result"))))]);
    let out = h.engine.submit_after(h.now, vec![job(JobOptions { after: vec![old], ..Default::default() })], &known);
    assert_eq!(out.expect("accepted")[0].state, Some(JobState::Queued));
    // One that ended here a moment ago, not yet stored: asked again.
    let recent = submit(&mut h, JobOptions::default());
    h.engine.cancel(h.now, recent.id);
    let err = h.engine.submit(h.now, vec![job(JobOptions { after: vec![recent.id], ..Default::default() })]);
    assert_eq!(err.map(|_| ()), Err(SubmitError::Settling(recent.id)));
}

#[test]
fn a_unique_key_answers_with_its_holder_until_it_is_free() {
    let mut h = Harness::new(10);
    let (w, _) = h.add_worker_of("w1", 1, &[JobKind::Noop]);
    let open = JobOptions { unique_key: Some("k".into()), ..Default::default() };
    let first = submit(&mut h, open.clone());
    let again = submit(&mut h, open.clone());
    assert!(again.duplicate && again.id == first.id, "{again:?}");
    // Twice in one batch: the second is the first's duplicate.
    let batch = h.engine.submit(h.now, vec![job(JobOptions { unique_key: Some("b".into()), ..Default::default() }); 2]);
    let batch = batch.expect("accepted");
    assert!(!batch[0].duplicate && batch[1].duplicate && batch[1].id == batch[0].id);
    let unit = dispatched(&h.engine.take_effects()).remove(0);
    assert_eq!(unit.lease.job_id, first.id);
    h.engine.complete(h.now, &w, &unit.lease, Outcome::Success(json!(1))).expect("done");
    let freed = h
        .engine
        .take_effects()
        .iter()
        .any(|e| matches!(e, Effect::Store(StoreOp::Finished { release_key: Some(k), .. }) if k == "k"));
    assert!(freed, "the store frees the key with the job");
    let third = submit(&mut h, open);
    assert!(!third.duplicate, "free once its job finished");
    // A key held for a time outlives its job.
    let timed = JobOptions { unique_key: Some("t".into()), unique_for_s: Some(60), ..Default::default() };
    let t = submit(&mut h, timed.clone());
    h.engine.cancel(h.now, t.id);
    assert!(submit(&mut h, timed.clone()).duplicate);
    h.advance(Duration::from_secs(60));
    h.engine.tick(h.now);
    assert!(!submit(&mut h, timed).duplicate);
}

#[test]
fn unique_keys_are_bounded() {
    let mut h = Harness::new(10_000);
    for n in 0..1_000 {
        submit(&mut h, JobOptions { unique_key: Some(format!("k{n}")), ..Default::default() });
    }
    let err =
        h.engine.submit(h.now, vec![job(JobOptions { unique_key: Some("one more".into()), ..Default::default() })]);
    assert!(matches!(err, Err(SubmitError::Keys(_))), "{err:?}");
}

#[test]
fn an_attempt_past_its_timeout_is_cancelled_and_fails_with_timeout() {
    let mut h = Harness::new(10);
    h.add_worker_of("w1", 1, &[JobKind::Noop]);
    let retry = RetryPolicy { max_attempts: 2, backoff: Backoff { initial_ms: 500, max_ms: 500, jitter: 0.0 } };
    let a = submit(&mut h, JobOptions { timeout_ms: Some(1_000), retry: Some(retry), ..Default::default() });
    assert_eq!(dispatched(&h.engine.take_effects()).len(), 1);
    assert_eq!(h.engine.next_wake(), Some(h.now.mono + Duration::from_secs(1)));
    h.advance(Duration::from_secs(1));
    h.engine.wake(h.now);
    let effects = h.engine.take_effects();
    assert!(effects.iter().any(
        |e| matches!(e, Effect::Control { control: Control::Cancel { job_id, attempt: 1 }, .. } if *job_id == a.id)
    ));
    assert_eq!(stored(&effects), vec![(a.id, "scheduled")], "backing off before attempt 2");
    let view = h.engine.view(&a.id).expect("active");
    assert_eq!(view.run_at_ms, Some(h.now.wall_ms + 500), "the next attempt's time shows");
    h.advance(Duration::from_millis(500));
    h.engine.wake(h.now);
    assert_eq!(dispatched(&h.engine.take_effects()).first().map(|u| u.lease.attempt), Some(2));
    h.advance(Duration::from_secs(1));
    h.engine.wake(h.now);
    let error = h.engine.take_effects().into_iter().find_map(|e| match e {
        Effect::Store(StoreOp::Finished { state: JobState::Failed, error, .. }) => error,
        _ => None,
    });
    let error = error.expect("failed after its 2 attempts");
    assert!(error.starts_with("timeout: gave up after 2 attempts"), "{error}");
}

#[test]
fn a_retry_policy_backs_off_and_a_refused_retry_still_fails_at_once() {
    let mut h = Harness::new(10);
    let (w, _) = h.add_worker_of("w1", 1, &[JobKind::Noop]);
    let retry = RetryPolicy { max_attempts: 5, backoff: Backoff { initial_ms: 1_000, max_ms: 10_000, jitter: 0.0 } };
    let a = submit(&mut h, JobOptions { retry: Some(retry), ..Default::default() });
    for (attempt, wait) in [(1, 1_000), (2, 2_000), (3, 4_000)] {
        let unit = dispatched(&h.engine.take_effects()).remove(0);
        assert_eq!(unit.lease.attempt, attempt);
        let failure = Outcome::Failure { message: "flaky".into(), retryable: true };
        h.engine.complete(h.now, &w, &unit.lease, failure).expect("taken");
        assert_eq!(h.engine.view(&a.id).map(|v| v.state), Some(JobState::Scheduled));
        h.advance(Duration::from_millis(wait));
        h.engine.wake(h.now);
    }
    let unit = dispatched(&h.engine.take_effects()).remove(0);
    let refused = Outcome::Failure { message: "bad input".into(), retryable: false };
    h.engine.complete(h.now, &w, &unit.lease, refused).expect("taken");
    assert_eq!(h.engine.view(&a.id), None, "a failure the worker will not retry ends the job");
    let _ = unit.worker;
}

/// A `noop` job as the store gives it back at start-up, in `state`.
fn restored(id: JobId, state: JobState) -> RestoredJob {
    RestoredJob {
        id,
        spec: JobSpec::Noop(Default::default()),
        priority: Priority::Normal,
        seq: 1,
        created_at_ms: 1,
        attempts: 0,
        lease: None,
        parent: None,
        done: None,
        retry_of: None,
        state,
        opts: None,
        run_at_ms: None,
        ended_parents: vec![],
        priority_changes: 0,
    }
}

#[test]
fn restored_jobs_keep_their_time_and_their_parents() {
    let mut h = Harness::new(10);
    let (parent, child, later) = (JobId::new(), JobId::new(), JobId::new());
    let row = |id, state, opts, run_at_ms, ended_parents| RestoredJob {
        opts: Some(Arc::new(opts)),
        run_at_ms,
        ended_parents,
        ..restored(id, state)
    };
    h.engine.restore(
        h.now,
        vec![
            // Its parent succeeded before the restart: it queues now.
            row(
                child,
                JobState::Waiting,
                JobOptions { after: vec![parent], ..Default::default() },
                None,
                vec![(parent, (JobState::Succeeded, Some(json!("p"))))],
            ),
            row(later, JobState::Scheduled, JobOptions::default(), Some(h.now.wall_ms + 5_000), vec![]),
        ],
    );
    assert_eq!(h.engine.view(&child).map(|v| v.state), Some(JobState::Queued));
    assert_eq!(h.engine.view(&later).map(|v| v.state), Some(JobState::Scheduled));
    assert_eq!(h.engine.next_wake(), Some(h.now.mono + Duration::from_secs(5)));
    h.add_worker_of("w1", 1, &[JobKind::Noop]);
    let unit = dispatched(&h.engine.take_effects()).remove(0);
    assert_eq!(unit.parents.and_then(|p| p.get(&parent.to_string()).cloned()), Some(json!("p")));
}

#[test]
fn a_restored_job_keeps_the_priority_changes_it_made() {
    let mut h = Harness::new(10);
    let (spent, left) = (JobId::new(), JobId::new());
    let row = |id, priority_changes| RestoredJob { priority_changes, ..restored(id, JobState::Queued) };
    h.engine.restore(h.now, vec![row(spent, u32::from(MAX_PRIORITY_CHANGES)), row(left, 99)]);
    // A restart (or another master taking over) does not start the count again.
    assert_eq!(h.engine.reprioritise(h.now, spent, Priority::High), Err(Unmovable::TooManyChanges(spent)));
    assert_eq!(h.engine.reprioritise(h.now, left, Priority::High), Ok(left), "its last change");
    assert_eq!(h.engine.reprioritise(h.now, left, Priority::Low), Err(Unmovable::TooManyChanges(left)));
}
