//! Groups under the fake clock: fair turns, concurrency and rate limits.
#![allow(clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use faena_proto::ids::JobId;
use faena_proto::jobs::{JobKind, JobSpec, Priority};
use faena_proto::options::JobOptions;
use serde_json::json;

use super::groups::Limits;
use super::tests::Harness;
use super::*;

fn in_group(group: &str) -> NewJob {
    let opts = JobOptions { group: Some(group.into()), ..Default::default() };
    NewJob {
        opts: Some(Arc::new(opts)),
        ..NewJob::new(JobId::new(), JobSpec::Noop(Default::default()), Priority::Normal)
    }
}

fn units(h: &mut Harness) -> Vec<LeaseRef> {
    h.dispatches().into_iter().map(|(_, l)| l).collect()
}

#[test]
fn a_flooding_group_does_not_delay_one_that_submits_a_few() {
    let mut h = Harness::new(10_000);
    let (w, _) = h.add_worker_of("w1", 1, &[JobKind::Noop]);
    let flood: Vec<NewJob> = (0..1_000).map(|_| in_group("a")).collect();
    h.engine.submit(h.now, flood).expect("accepted");
    let mut lease = units(&mut h).remove(0);
    let few: Vec<NewJob> = (0..3).map(|_| in_group("b")).collect();
    let few_ids: Vec<JobId> = few.iter().map(|j| j.id).collect();
    let accepted = h.engine.submit(h.now, few).expect("accepted");
    assert_eq!(accepted.iter().map(|a| a.position).collect::<Vec<_>>(), [1, 3, 5], "b's jobs take every other place");
    let mut order = Vec::new();
    for _ in 0..6 {
        h.engine.complete(h.now, &w, &lease, Outcome::Success(json!({}))).expect("done");
        lease = units(&mut h).remove(0);
        order.push(few_ids.contains(&lease.job_id));
    }
    assert_eq!(order, [false, true, false, true, false, true]);
    let groups = h.engine.groups();
    assert_eq!(groups.iter().map(|g| (g.name.as_str(), g.queued)).collect::<Vec<_>>(), [("a", 996), ("b", 0)]);
}

#[test]
fn a_group_at_max_running_waits_while_others_run() {
    let mut h = Harness::new(100);
    h.add_worker_of("w1", 4, &[JobKind::Noop]);
    let limits = Limits { max_running: Some(1), ..Default::default() };
    h.engine.set_group(h.now, "a", Some(limits)).expect("room");
    let stored = h.engine.take_effects();
    assert!(
        stored.iter().any(|e| matches!(e, Effect::Store(StoreOp::Named { name, doc: Some(_), .. }) if name == "a"))
    );
    let a: Vec<NewJob> = (0..3).map(|_| in_group("a")).collect();
    let b: Vec<NewJob> = (0..2).map(|_| in_group("b")).collect();
    h.engine.submit(h.now, a).expect("accepted");
    h.engine.submit(h.now, b).expect("accepted");
    let out = units(&mut h);
    assert_eq!(out.len(), 3, "one of a's, both of b's: {out:?}");
    let held = h.engine.groups().into_iter().find(|g| g.name == "a").expect("a");
    assert!(held.held && held.running == 1 && held.queued == 2, "{held:?}");
    let mut counts: Vec<_> =
        h.engine.group_counts().map(|(g, queued, running)| (g.to_owned(), queued, running)).collect();
    counts.sort();
    assert_eq!(counts, [("a".to_owned(), 2, 1), ("b".to_owned(), 0, 2)], "the metrics' counts");
    // One of a's ends: the next goes.
    let w = faena_proto::ids::WorkerId::parse("w1").expect("id");
    let a_lease = out.iter().find(|l| h.engine.view(&l.job_id).is_some()).cloned().expect("a lease");
    let _ = a_lease;
    for l in &out {
        h.engine.complete(h.now, &w, l, Outcome::Success(json!({}))).expect("done");
    }
    assert_eq!(units(&mut h).len(), 1, "a runs one at a time");
    // Removing the limit lets the rest go.
    h.engine.set_group(h.now, "a", None).expect("room");
    assert_eq!(units(&mut h).len(), 1);
}

#[test]
fn a_group_rate_spaces_its_dispatches_and_wakes_the_engine() {
    let mut h = Harness::new(100);
    h.add_worker_of("w1", 10, &[JobKind::Noop]);
    h.engine.set_group(h.now, "slow", Some(Limits { rate: Some("2/s".into()), ..Default::default() })).expect("room");
    h.engine.submit(h.now, (0..5).map(|_| in_group("slow")).collect()).expect("accepted");
    assert_eq!(units(&mut h).len(), 2, "its burst");
    assert_eq!(h.engine.next_wake(), Some(h.now.mono + Duration::from_millis(500)));
    h.advance(Duration::from_millis(500));
    h.engine.wake(h.now);
    assert_eq!(units(&mut h).len(), 1);
    h.advance(Duration::from_millis(1_000));
    h.engine.wake(h.now);
    assert_eq!(units(&mut h).len(), 2);
    assert_eq!(h.engine.next_wake(), None, "nothing left to wait for");
}

#[test]
fn groups_are_bounded() {
    let mut h = Harness::new(1_000);
    for n in 0..100 {
        h.engine.submit(h.now, vec![in_group(&format!("g{n}"))]).expect("room");
    }
    let err = h.engine.submit(h.now, vec![in_group("one-more")]);
    assert!(matches!(err, Err(SubmitError::Groups(_))), "{err:?}");
    assert!(h.engine.set_group(h.now, "one-more", Some(Limits::default())).is_err());
    assert!(h.engine.submit(h.now, vec![in_group("g7")]).is_ok(), "a known group still takes jobs");
}

/// Heads of a lane no worker has room for are passed over, however many
/// groups they head, and wait their turn in order once one has room.
#[test]
fn a_lane_without_room_is_passed_over_group_by_group() {
    let mut h = Harness::new(100);
    h.add_worker_of("w1", 2, &[JobKind::Noop]);
    let hash = |g: usize| {
        let spec = JobSpec::parse_kind(JobKind::RandomxHash, json!({"key": "k", "input": format!("input {g}")}))
            .expect("valid");
        let opts = JobOptions { group: Some(format!("g{g}")), ..Default::default() };
        NewJob { opts: Some(Arc::new(opts)), ..NewJob::new(JobId::new(), spec, Priority::Normal) }
    };
    let hashes: Vec<NewJob> = (0..5).map(hash).collect();
    let hash_ids: Vec<JobId> = hashes.iter().map(|j| j.id).collect();
    h.engine.submit(h.now, hashes).expect("accepted");
    let noops: Vec<NewJob> = (0..3).map(|_| in_group("n")).collect();
    let noop_ids: Vec<JobId> = noops.iter().map(|j| j.id).collect();
    h.engine.submit(h.now, noops).expect("accepted");
    let ran: Vec<JobId> = units(&mut h).into_iter().map(|l| l.job_id).collect();
    assert_eq!(ran, noop_ids[..2], "the noop worker's two slots, past five hash jobs ahead");
    h.add_worker_of("w2", 3, &[JobKind::RandomxHash]);
    let ran: Vec<JobId> = units(&mut h).into_iter().map(|l| l.job_id).collect();
    assert_eq!(ran, hash_ids[..3], "in their order, as far as the new worker's slots go");
}
