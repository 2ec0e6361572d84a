//! Mining jobs in the engine: proportional split, re-splitting what is left
//! when workers come and go, early finish at `max_shares`, cancel, failure,
//! quarantine and restart.
#![allow(clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use faena_proto::api::JobEvent;
use faena_proto::ids::FencingToken;
use faena_proto::ids::{InstanceId, JobId, WorkerId};
use faena_proto::jobs::{JobKind, JobSpec, JobState, Priority};
use faena_proto::mine::{MineOutput, MineParams, Share, UnitOutput, UnitProgress};
use faena_proto::mqtt::{Control, WorkerState};
use serde_json::{Value, json};

use super::mining::{Late, MinedUnit};
use super::tests::Harness;
use super::*;
use faena_verify::VerifiedShares;

struct Mining {
    h: Harness,
    workers: BTreeMap<WorkerId, InstanceId>,
    /// Everything the engine emitted that the test has not looked at.
    effects: Vec<Effect>,
}

impl Mining {
    fn new(workers: &[(&str, f64)]) -> Self {
        let mut h = Harness::new(100);
        let mut ids = BTreeMap::new();
        for (name, hashrate) in workers {
            let (id, instance) = h.add_worker_of(name, 2, &[JobKind::RandomxMine, JobKind::Noop]);
            h.engine.heartbeat(h.now, &id, instance, &[], *hashrate).expect("heartbeat");
            ids.insert(id, instance);
        }
        h.engine.take_effects();
        Self { h, workers: ids, effects: Vec::new() }
    }

    fn worker(&self, name: &str) -> WorkerId {
        WorkerId::parse(name).expect("id")
    }

    fn submit(&mut self, params: Value) -> JobId {
        let id = JobId::new();
        let spec = JobSpec::parse("randomx.mine", params).expect("valid");
        assert!(self.h.engine.submit(self.h.now, vec![NewJob::new(id, spec, Priority::Normal)]).is_ok());
        id
    }

    fn collect(&mut self) {
        self.effects.extend(self.h.engine.take_effects());
    }

    /// Units sent since the last call: (worker, lease, start, count).
    fn units(&mut self) -> Vec<(WorkerId, LeaseRef, u32, u64)> {
        self.collect();
        let mut out = Vec::new();
        self.effects.retain(|e| match e {
            Effect::Dispatch { worker, unit, .. } => {
                let p: MineParams = serde_json::from_value(unit.params.clone()).expect("unit params");
                let w = p.work().expect("valid unit");
                let lease = LeaseRef { job_id: unit.job_id, attempt: unit.attempt, token: unit.token.clone() };
                out.push((worker.clone(), lease, w.start, w.count));
                false
            }
            _ => true,
        });
        out
    }

    fn finish_unit(&mut self, worker: &WorkerId, lease: &LeaseRef, count: u64, shares: Vec<Share>) {
        // As the coordinator hands it over once the verifier has checked the shares.
        let shares = VerifiedShares::assume_verified(shares);
        let out = MinedUnit { shares, hashes: count, hashrate: 100.0, elapsed_ms: 1000 };
        assert_eq!(self.h.engine.complete(self.h.now, worker, lease, Outcome::Mined(out)), Ok(false));
    }

    /// A unit's progress report, its shares verified (as the coordinator passes it on).
    fn progress(&mut self, worker: &WorkerId, lease: &LeaseRef, report: Value) -> Result<(), LeaseError> {
        let p: UnitProgress = serde_json::from_value(report).expect("unit progress");
        let shares = VerifiedShares::assume_verified(p.shares);
        self.h.engine.unit_progress(
            self.h.now,
            worker,
            lease,
            MinedProgress { hashes: p.hashes, hashrate: p.hashrate, shares },
        )
    }

    fn final_event(&mut self, job: JobId) -> Option<JobEvent> {
        self.collect();
        self.effects.iter().find_map(|e| match e {
            Effect::Notify { job: j, event } if *j == job && event.is_final() => Some(event.clone()),
            _ => None,
        })
    }

    fn cancels(&mut self) -> Vec<(WorkerId, JobId)> {
        self.collect();
        self.effects
            .iter()
            .filter_map(|e| match e {
                Effect::Control { worker, control: Control::Cancel { job_id, .. } } => Some((worker.clone(), *job_id)),
                _ => None,
            })
            .collect()
    }
}

fn params(count: u64) -> Value {
    json!({"key": "6b", "blob": "00".repeat(76), "difficulty": 100, "nonce_start": 1000, "nonce_count": count})
}

fn output(event: Option<JobEvent>) -> MineOutput {
    match event {
        Some(JobEvent::Succeeded { result, .. }) => serde_json::from_value(result).expect("mine output"),
        other => panic!("expected success, got {other:?}"),
    }
}

/// Runs units to the end, each worker finishing what it holds in turn.
fn run_to_end(m: &mut Mining, job: JobId, mut out: Vec<(WorkerId, LeaseRef, u32, u64)>) -> Vec<(u32, u64)> {
    let mut covered = Vec::new();
    while let Some((w, lease, start, count)) = out.pop() {
        m.finish_unit(&w, &lease, count, vec![]);
        covered.push((start, count));
        out.extend(m.units());
        assert!(out.len() <= m.workers.len(), "one unit per worker at a time");
    }
    assert!(m.final_event(job).is_some());
    covered.sort();
    covered
}

fn assert_exact_cover(covered: &[(u32, u64)], start: u32, count: u64) {
    let mut next = u64::from(start);
    for (s, c) in covered {
        assert_eq!(u64::from(*s), next, "no gap, no overlap: {covered:?}");
        next += c;
    }
    assert_eq!(next, u64::from(start) + count);
}

#[test]
fn the_range_is_split_by_speed_and_covered_exactly_once() {
    let mut m = Mining::new(&[("fast", 300.0), ("slow", 100.0)]);
    let job = m.submit(params(10_000));
    let units = m.units();
    let sizes: BTreeMap<String, u64> = units.iter().map(|u| (u.0.to_string(), u.3)).collect();
    assert_eq!(sizes.get("fast"), Some(&3750), "half of its 3/4 share of 10,000");
    assert_eq!(sizes.get("slow"), Some(&782), "half of its 1/4 share of what is left");
    let view = m.h.engine.view(&job).expect("active");
    assert_eq!(view.state, JobState::Running);
    assert_eq!(view.worker.as_deref(), Some("fast,slow"));
    let covered = run_to_end(&mut m, job, units);
    assert_exact_cover(&covered, 1000, 10_000);
    let out = output(m.final_event(job));
    assert_eq!(out.hashes, 10_000);
    assert_eq!(out.ranges.iter().map(|r| r.count).sum::<u64>(), 10_000);
    assert!(m.h.engine.view(&job).is_none());
}

#[test]
fn a_dead_workers_range_is_split_again_and_a_joiner_takes_part() {
    let mut m = Mining::new(&[("a", 100.0), ("b", 100.0)]);
    let job = m.submit(params(5_000));
    let units = m.units();
    assert_eq!(units.len(), 2);
    let (b, b_instance) = (m.worker("b"), m.workers[&m.worker("b")]);
    let lost = units.iter().find(|u| u.0 == b).cloned().expect("b has a unit");
    m.h.engine.worker_state(m.h.now, &b, b_instance, WorkerState::Offline);
    m.workers.remove(&b);
    let (c, _) = m.h.add_worker_of("c", 1, &[JobKind::RandomxMine]);
    m.workers.insert(c.clone(), InstanceId::new());
    let mut out: Vec<_> = units.into_iter().filter(|u| u.0 != b).collect();
    let fresh = m.units();
    assert!(fresh.iter().any(|u| u.0 == c), "the new worker gets a unit at once");
    let returned = m.effects.iter().filter(|e| matches!(e, Effect::RangeReturned { job: j } if *j == job)).count();
    assert_eq!(returned, 1, "the lost unit's range counts as one redelivery");
    out.extend(fresh);
    let covered = run_to_end(&mut m, job, out);
    assert!(covered.iter().any(|(s, _)| *s == lost.2), "the lost range was handed out again");
    assert_exact_cover(&covered, 1000, 5_000);
    let late = m.h.engine.complete(m.h.now, &b, &lost.1, Outcome::Success(json!({})));
    assert!(late.is_err(), "the dead worker's late result is not accepted");
}

#[test]
fn max_shares_ends_the_job_early_and_cancels_the_other_units() {
    let mut m = Mining::new(&[("a", 100.0), ("b", 100.0)]);
    let mut p = params(100_000);
    p["max_shares"] = json!(2);
    let job = m.submit(p);
    let units = m.units();
    let (a_unit, b_unit) = (&units[0], &units[1]);
    let share = |nonce| Share { nonce, hash: "ab".repeat(32) };
    let progress = json!({"hashes": 10, "hashrate": 10.0, "shares": [share(a_unit.2)]});
    assert!(m.progress(&a_unit.0, &a_unit.1, progress).is_ok());
    assert!(m.final_event(job).is_none());
    let progress = json!({"hashes": 10, "hashrate": 10.0, "shares": [share(b_unit.2 + 1)]});
    assert!(m.progress(&b_unit.0, &b_unit.1, progress).is_ok());
    let out = output(m.final_event(job));
    assert_eq!(out.shares.len(), 2);
    assert_eq!(out.hashes, 20);
    let mut cancelled: Vec<JobId> = m.cancels().into_iter().map(|c| c.1).collect();
    cancelled.sort();
    let mut expected = vec![a_unit.1.job_id, b_unit.1.job_id];
    expected.sort();
    assert_eq!(cancelled, expected);
}

#[test]
fn cancelling_the_job_or_a_unit_cancels_everything_and_a_failed_unit_fails_the_job() {
    let mut m = Mining::new(&[("a", 100.0), ("b", 100.0)]);
    let job = m.submit(params(100_000));
    let units = m.units();
    assert!(m.h.engine.cancel(m.h.now, units[0].1.job_id), "a unit's id cancels its job");
    assert_eq!(m.final_event(job), Some(JobEvent::Cancelled));
    assert_eq!(m.cancels().len(), 2);
    assert!(m.units().is_empty(), "nothing more is handed out");

    let mut m = Mining::new(&[("a", 100.0), ("b", 100.0)]);
    let job = m.submit(params(100_000));
    let units = m.units();
    let failure = Outcome::Failure { message: "blob rejected".into(), retryable: false };
    assert_eq!(m.h.engine.complete(m.h.now, &units[0].0, &units[0].1, failure), Ok(false));
    match m.final_event(job) {
        Some(JobEvent::Failed { error, .. }) => assert!(error.contains("blob rejected"), "{error}"),
        other => panic!("expected failure, got {other:?}"),
    }
    assert_eq!(m.cancels().len(), 1, "the other unit is stopped");
}

#[test]
fn a_worker_over_the_invalid_share_limit_gets_no_more_work_until_it_registers() {
    let mut m = Mining::new(&[("a", 100.0)]);
    let job = m.submit(params(100_000));
    let units = m.units();
    let a = m.worker("a");
    assert!(!m.h.engine.invalid_shares(m.h.now, &a, &units[0].1.job_id, 2), "at the limit");
    assert!(m.h.engine.invalid_shares(m.h.now, &a, &units[0].1.job_id, 1), "over it");
    m.finish_unit(&a, &units[0].1, units[0].3, vec![]);
    assert!(m.units().is_empty(), "quarantined: no new unit");
    let instance = m.workers[&a];
    m.h.engine.worker_state(m.h.now, &a, instance, WorkerState::Online);
    assert!(m.units().is_empty(), "its own status does not lift the quarantine");
    assert_eq!(m.h.engine.view(&job).map(|v| v.state), Some(JobState::Running));
    // Registering again, under a new instance once the old one is gone,
    // does not lift it either: the quarantine has its own time.
    m.h.engine.worker_state(m.h.now, &a, instance, WorkerState::Offline);
    let (_, second) = m.h.add_worker_of("a", 2, &[JobKind::RandomxMine]);
    assert!(m.units().is_empty(), "a new registration is still quarantined");
    m.h.advance(Duration::from_secs(600));
    let caps = crate::scheduler::tests::worker("a", 2, &[JobKind::RandomxMine], m.h.now.mono).caps;
    let session = m.h.engine.workers().get(&a).map(|w| w.session.clone());
    let reg = Registration { worker: a.clone(), instance: second, caps, running: vec![], session };
    m.h.engine.register(m.h.now, reg).expect("the same instance may register again");
    assert_eq!(m.units().len(), 1, "after the quarantine time it gets work");
}

#[test]
fn a_restart_keeps_finished_and_running_units_and_hands_out_the_rest() {
    let mut m = Mining::new(&[("a", 100.0), ("b", 100.0)]);
    let job = m.submit(params(10_000));
    let units = m.units();
    let (a, b) = (units[0].clone(), units[1].clone());
    // What the store would hold after a finishes and the master dies.
    let job_row = RestoredJob {
        id: job,
        spec: JobSpec::parse("randomx.mine", params(10_000)).expect("valid"),
        priority: Priority::Normal,
        seq: 0,
        created_at_ms: 1,
        attempts: 0,
        lease: None,
        parent: None,
        done: None,
        retry_of: None,
        state: JobState::Queued,
        opts: None,
        run_at_ms: None,
        ended_parents: Vec::new(),
        priority_changes: 0,
    };
    let unit_row = |u: &(WorkerId, LeaseRef, u32, u64), seq| RestoredJob {
        id: u.1.job_id,
        spec: JobSpec::RandomxMine(
            serde_json::from_value::<MineParams>(params(10_000)).expect("p").unit(u.2, u.3, None),
        ),
        priority: Priority::Normal,
        seq,
        created_at_ms: 1,
        attempts: 1,
        lease: None,
        parent: Some(job),
        done: None,
        retry_of: None,
        state: JobState::Queued,
        opts: None,
        run_at_ms: None,
        ended_parents: Vec::new(),
        priority_changes: 0,
    };
    let finished = RestoredJob {
        done: Some((
            a.0.to_string(),
            serde_json::to_value(UnitOutput { shares: vec![], hashes: a.3, hashrate: 1.0, elapsed_ms: 1 }).expect("j"),
        )),
        ..unit_row(&a, 1)
    };
    let running = RestoredJob { lease: Some((b.0.clone(), 1, b.1.token.clone())), ..unit_row(&b, 2) };
    let mut fresh = Mining::new(&[]);
    fresh.h.engine.restore(fresh.h.now, vec![job_row, finished, running]);
    let view = fresh.h.engine.view(&job).expect("restored");
    assert_eq!(view.state, JobState::Running);
    fresh.h.add_worker_of("c", 1, &[JobKind::RandomxMine]);
    fresh.workers.insert(fresh.worker("c"), InstanceId::new());
    let mut out = fresh.units();
    assert_eq!(out.len(), 1);
    assert!(out.iter().all(|u| u.2 >= b.2 + b.3 as u32), "neither a's nor b's range is handed out again");
    // b comes back and claims its unit; everything finishes.
    let bw = test_worker_registration(&fresh, "b", &b.1);
    fresh.h.engine.register(fresh.h.now, bw).expect("b registers");
    fresh.workers.insert(b.0.clone(), InstanceId::new());
    out.push(b.clone());
    let mut covered = run_to_end(&mut fresh, job, out);
    covered.push((a.2, a.3));
    covered.sort();
    assert_exact_cover(&covered, 1000, 10_000);
    assert_eq!(output(fresh.final_event(job)).hashes, 10_000);
}

fn test_worker_registration(m: &Mining, name: &str, lease: &LeaseRef) -> Registration {
    let w = crate::scheduler::tests::worker(name, 1, &[JobKind::RandomxMine], m.h.now.mono);
    Registration { worker: w.id, instance: w.instance, caps: w.caps, running: vec![lease.clone()], session: None }
}

#[test]
fn progress_reaches_watchers_of_the_job() {
    let mut m = Mining::new(&[("a", 100.0)]);
    let job = m.submit(params(1_000_000));
    let units = m.units();
    m.h.advance(Duration::from_millis(10));
    let p = json!({"hashes": 500, "hashrate": 250.0, "shares": []});
    assert!(m.progress(&units[0].0, &units[0].1, p).is_ok());
    m.collect();
    let data = m
        .effects
        .iter()
        .find_map(|e| match e {
            Effect::Notify { job: j, event: JobEvent::Progress { data, .. } } if *j == job => Some(data.clone()),
            _ => None,
        })
        .expect("job progress");
    assert_eq!((data["hashes"].as_u64(), data["hashrate"].as_f64()), (Some(500), Some(250.0)));
    assert_eq!(data["workers"][0]["worker"], "a");
    let garbage = m.h.engine.progress(m.h.now, &units[0].0, &units[0].1, json!("not progress"));
    assert!(garbage.is_ok(), "ignored, not fatal");
}

#[test]
fn a_units_stored_result_keeps_the_shares_it_reported_with_progress() {
    let mut m = Mining::new(&[("a", 100.0)]);
    m.submit(params(100_000));
    let units = m.units();
    let (w, lease, start, count) = units[0].clone();
    let early = Share { nonce: start + 1, hash: "cd".repeat(32) };
    let progress = json!({"hashes": 5, "hashrate": 5.0, "shares": [early]});
    assert!(m.progress(&w, &lease, progress).is_ok());
    // The final result lists only what was not reported before (as the master's check leaves it).
    let late = Share { nonce: start + 2, hash: "ef".repeat(32) };
    m.finish_unit(&w, &lease, count, vec![late]);
    m.collect();
    let stored = m
        .effects
        .iter()
        .find_map(|e| match e {
            Effect::Store(StoreOp::Finished { id, result: Some(r), .. }) if *id == lease.job_id => Some(r.clone()),
            _ => None,
        })
        .expect("the unit's stored result");
    let out: UnitOutput = serde_json::from_value(stored).expect("unit output");
    let nonces: Vec<u32> = out.shares.iter().map(|s| s.nonce).collect();
    assert_eq!(nonces, vec![start + 1, start + 2]);
}

#[test]
fn a_long_job_fails_for_lack_of_workers_only_after_they_have_been_gone_a_while() {
    let mut m = Mining::new(&[("a", 100.0)]);
    let job = m.submit(params(10_000_000));
    let units = m.units();
    // An hour of mining later, the only worker goes away.
    m.h.advance(Duration::from_secs(3600));
    let a = m.worker("a");
    m.h.engine.heartbeat(m.h.now, &a, m.workers[&a], std::slice::from_ref(&units[0].1), 100.0).expect("alive");
    m.h.engine.tick(m.h.now);
    m.h.engine.worker_state(m.h.now, &a, m.workers[&a], WorkerState::Offline);
    m.h.engine.tick(m.h.now);
    assert!(m.final_event(job).is_none(), "its lane was offered a moment ago");
    m.h.advance(Duration::from_secs(29));
    m.h.engine.tick(m.h.now);
    assert!(m.final_event(job).is_none(), "under the 30 s timeout");
    m.h.advance(Duration::from_secs(2));
    m.h.engine.tick(m.h.now);
    match m.final_event(job) {
        Some(JobEvent::Failed { error, .. }) => assert!(error.contains("no worker that runs randomx.mine"), "{error}"),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn a_retired_units_late_shares_count_as_stale_for_the_grace_period_only() {
    let mut m = Mining::new(&[("a", 100.0)]);
    let job = m.submit(params(1_000_000));
    let (a, lease, _, _) = m.units().pop().expect("a unit");
    let mut next: MineParams = serde_json::from_value(params(1_000_000)).expect("params");
    next.blob = "01".repeat(76);
    let grace = Duration::from_secs(10);
    assert_eq!(m.h.engine.replace_template(m.h.now, job, next, grace), Some(1));
    assert!(m.cancels().iter().any(|(w, u)| *w == a && *u == lease.job_id), "the old unit is cancelled");

    // The worker's report sent after the retirement: its unit's old
    // template comes back for verifying, to that lease only.
    let work = m.h.engine.late_unit(m.h.now, &a, &lease).expect("the retired unit");
    assert_eq!((work.job, work.params.blob.as_str()), (job, "00".repeat(76).as_str()));
    let forged = LeaseRef { token: FencingToken::new(), ..lease.clone() };
    assert!(m.h.engine.late_unit(m.h.now, &a, &forged).is_none(), "another token is not the unit's");
    assert!(m.h.engine.late_unit(m.h.now, &m.worker("b"), &lease).is_none(), "nor another worker");
    assert!(m.h.engine.check_lease(&a, &lease).is_err(), "the lease itself is gone");

    let shares = VerifiedShares::assume_verified(vec![Share { nonce: 1005, hash: "ab".repeat(32) }]);
    assert_eq!(m.h.engine.late_shares(m.h.now, &lease.job_id, &shares), Late::Stale);
    let known = m.h.engine.late_unit(m.h.now, &a, &lease).expect("still in grace").known;
    assert!(known.contains(&1005), "the verifier sees it as known from now on");
    assert_eq!(m.h.engine.late_shares(m.h.now, &lease.job_id, &shares), Late::Stale, "sent twice");
    let progress = m.h.engine.view(&job).and_then(|v| v.progress).expect("mining progress");
    assert_eq!(progress.stale_shares, 1, "the job counts the late share as stale");

    m.h.advance(grace);
    assert!(m.h.engine.late_unit(m.h.now, &a, &lease).is_none(), "past the grace period");
    assert_eq!(m.h.engine.late_shares(m.h.now, &lease.job_id, &shares), Late::Expired);
}

#[test]
fn a_running_mining_jobs_later_units_take_its_new_priority() {
    let mut m = Mining::new(&[("m1", 100.0)]);
    let job = m.submit(params(10_000));
    let first = m.units();
    assert_eq!(first.len(), 1);
    // A unit's id stands for its job.
    assert_eq!(m.h.engine.reprioritise(m.h.now, first[0].1.job_id, Priority::High), Ok(job));
    m.collect();
    let moved = m.effects.iter().any(|e| {
        matches!(e, Effect::Store(StoreOp::Reprioritised { id, priority: Priority::High, state: JobState::Running, .. }) if *id == job)
    });
    assert!(moved, "{:?}", m.effects);
    m.effects.clear();
    let (w, lease, _, count) = first[0].clone();
    m.finish_unit(&w, &lease, count, vec![]);
    let next = m.units();
    assert_eq!(next.len(), 1, "the rest of the range goes on");
    let inserted: Vec<Priority> = m
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::Store(StoreOp::Insert { id, priority, parent: Some(p), .. }) if *id == next[0].1.job_id => {
                assert_eq!(*p, job);
                Some(*priority)
            }
            _ => None,
        })
        .collect();
    assert_eq!(inserted, vec![Priority::High]);
    assert_eq!(m.h.engine.view(&next[0].1.job_id).map(|v| v.priority), Some(Priority::High));
}
