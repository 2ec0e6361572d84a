//! Engine behaviour under a fake clock: placement, leases, fencing, recovery.
#![allow(clippy::expect_used)]

use std::time::{Duration, Instant};

use faena_proto::api::JobEvent;
use faena_proto::ids::{InstanceId, JobId, WorkerId};
use faena_proto::jobs::{JobKind, JobSpec, JobState, Priority};
use faena_proto::mqtt::{Control, WorkerState};
use serde_json::json;

use super::*;
use crate::scheduler::tests::worker as test_worker;

pub(super) fn tok(s: &str) -> faena_proto::ids::FencingToken {
    faena_proto::ids::FencingToken::parse(s).expect("token")
}

pub(super) struct Harness {
    pub(super) engine: Engine,
    pub(super) now: Now,
}

impl Harness {
    pub(super) fn new(capacity: usize) -> Self {
        let cfg = EngineConfig {
            queue_capacity: capacity,
            max_attempts: 3,
            heartbeat: Duration::from_secs(1),
            invalid_share_limit: 2,
            no_worker_timeout: Duration::from_secs(30),
            quarantine: Duration::from_secs(600),
            max_unique_keys: 1_000,
            max_groups: 100,
        };
        Self { engine: Engine::new(cfg), now: Now { mono: Instant::now(), wall_ms: 1_000 } }
    }

    pub(super) fn advance(&mut self, d: Duration) {
        self.now.mono += d;
        self.now.wall_ms += d.as_millis() as u64;
    }

    fn add_worker(&mut self, id: &str, slots: u32) -> (WorkerId, InstanceId) {
        self.add_worker_of(id, slots, &[JobKind::Noop])
    }

    pub(super) fn add_worker_of(&mut self, id: &str, slots: u32, kinds: &[JobKind]) -> (WorkerId, InstanceId) {
        let w = test_worker(id, slots, kinds, self.now.mono);
        let reg =
            Registration { worker: w.id.clone(), instance: w.instance, caps: w.caps, running: vec![], session: None };
        self.engine.register(self.now, reg).expect("a free worker id");
        (w.id, w.instance)
    }

    fn submit(&mut self, priority: Priority) -> JobId {
        let id = JobId::new();
        let spec = JobSpec::Noop(Default::default());
        let out = self.engine.submit(self.now, vec![NewJob::new(id, spec, priority)]);
        assert!(out.is_ok());
        id
    }

    /// Dispatches in the order they were emitted: (worker, lease). Their
    /// units count as sent now, as the coordinator does after the commit.
    pub(super) fn dispatches(&mut self) -> Vec<(WorkerId, LeaseRef)> {
        let out: Vec<_> = self
            .engine
            .take_effects()
            .into_iter()
            .filter_map(|e| match e {
                Effect::Dispatch { worker, unit, .. } => {
                    Some((worker, LeaseRef { job_id: unit.job_id, attempt: unit.attempt, token: unit.token }))
                }
                _ => None,
            })
            .collect();
        let sent: Vec<_> = out.iter().map(|(_, l)| (l.job_id, l.attempt)).collect();
        self.engine.sent(self.now, &sent);
        out
    }
}

#[test]
fn jobs_wait_for_free_slots_in_priority_order() {
    let mut h = Harness::new(100);
    let (w, _) = h.add_worker("w1", 1);
    let first = h.submit(Priority::Normal);
    let low = h.submit(Priority::Low);
    let normal = h.submit(Priority::Normal);
    let high = h.submit(Priority::High);
    let d = h.dispatches();
    assert_eq!(d.len(), 1, "no prefetch: one slot, one unit");
    assert_eq!(d[0].1.job_id, first);
    assert_eq!(h.engine.view(&low).and_then(|v| v.position), Some(2));
    let mut order = Vec::new();
    let mut lease = d[0].1.clone();
    for _ in 0..3 {
        assert_eq!(h.engine.complete(h.now, &w, &lease, Outcome::Success(json!({}))), Ok(false));
        let next = h.dispatches();
        assert_eq!(next.len(), 1);
        lease = next[0].1.clone();
        order.push(lease.job_id);
    }
    assert_eq!(order, vec![high, normal, low]);
}

#[test]
fn a_submit_answers_the_state_its_dispatch_left() {
    let mut h = Harness::new(100);
    h.add_worker("w1", 1);
    let jobs = (0..2).map(|_| NewJob::new(JobId::new(), JobSpec::Noop(Default::default()), Priority::Normal));
    let out = h.engine.submit(h.now, jobs.collect()).expect("accepted");
    let answered: Vec<_> = out.iter().map(|a| (a.state, a.position)).collect();
    assert_eq!(answered, [(Some(JobState::Running), 0), (Some(JobState::Queued), 0)], "one slot: the first runs");
    assert_eq!(h.dispatches().len(), 1, "its dispatch is in the same effects, committed before the answer");
}

#[test]
fn queue_capacity_is_enforced_all_or_nothing() {
    let mut h = Harness::new(2);
    h.submit(Priority::Normal);
    let batch =
        (0..2).map(|_| NewJob::new(JobId::new(), JobSpec::Noop(Default::default()), Priority::Normal)).collect();
    assert_eq!(h.engine.submit(h.now, batch), Err(QueueFull { capacity: 2 }.into()));
    assert_eq!(h.engine.queue().len(), 1);
}

#[test]
fn results_are_fenced_by_token_and_duplicates_are_recognised() {
    let mut h = Harness::new(10);
    let (w, _) = h.add_worker("w1", 1);
    let id = h.submit(Priority::Normal);
    let lease = h.dispatches()[0].1.clone();
    let forged = LeaseRef { token: tok("forged"), ..lease.clone() };
    assert!(matches!(h.engine.complete(h.now, &w, &forged, Outcome::Success(json!(1))), Err(LeaseError::Stale { .. })));
    let wrong_attempt = LeaseRef { attempt: 7, ..lease.clone() };
    assert!(matches!(h.engine.progress(h.now, &w, &wrong_attempt, json!({})), Err(LeaseError::Stale { .. })));
    let stranger = WorkerId::parse("stranger").expect("id");
    assert_eq!(
        h.engine.complete(h.now, &stranger, &lease, Outcome::Success(json!(1))),
        Err(LeaseError::UnknownWorker(stranger))
    );
    let unknown = LeaseRef { job_id: JobId::new(), ..lease.clone() };
    assert!(matches!(
        h.engine.complete(h.now, &w, &unknown, Outcome::Success(json!(1))),
        Err(LeaseError::UnknownJob(_))
    ));
    assert_eq!(h.engine.complete(h.now, &w, &lease, Outcome::Success(json!(1))), Ok(false));
    assert_eq!(h.engine.complete(h.now, &w, &lease, Outcome::Success(json!(2))), Ok(true));
    let finals: Vec<_> = h
        .engine
        .take_effects()
        .into_iter()
        .filter(|e| matches!(e, Effect::Notify { event, .. } if event.is_final()))
        .collect();
    assert_eq!(finals.len(), 1, "one final answer per job");
    assert!(h.engine.view(&id).is_none());
}

#[test]
fn a_lost_worker_gives_its_job_to_another_and_the_old_result_is_ignored() {
    let mut h = Harness::new(10);
    let (w1, i1) = h.add_worker("w1", 1);
    h.submit(Priority::Normal);
    let (first_worker, old) = h.dispatches()[0].clone();
    assert_eq!(first_worker, w1);
    let (w2, _) = h.add_worker("w2", 1);
    h.engine.worker_state(h.now, &w1, i1, WorkerState::Offline);
    let d = h.dispatches();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].0, w2);
    assert_eq!(d[0].1.attempt, 2);
    assert!(h.engine.complete(h.now, &w1, &old, Outcome::Success(json!(1))).is_err());
    assert_eq!(h.engine.complete(h.now, &w2, &d[0].1, Outcome::Success(json!(1))), Ok(false));
}

#[test]
fn missed_heartbeats_and_expired_leases_requeue_within_two_intervals() {
    let mut h = Harness::new(10);
    let (w1, i1) = h.add_worker("w1", 1);
    let (w2, i2) = h.add_worker("w2", 1);
    let a = h.submit(Priority::Normal);
    let b = h.submit(Priority::Normal);
    let d = h.dispatches();
    let lease_of = |id: JobId| d.iter().find(|x| x.1.job_id == id).cloned().expect("dispatched");
    let (wa, la) = lease_of(a);
    let (_, lb) = lease_of(b);
    // One worker keeps heartbeating but stops reporting its job; the other goes silent.
    let (quiet, quiet_i) = if wa == w1 { (w1.clone(), i1) } else { (w2.clone(), i2) };
    let (chatty, chatty_i) = if wa == w1 { (w2.clone(), i2) } else { (w1.clone(), i1) };
    let _ = (quiet, quiet_i);
    for _ in 0..3 {
        h.advance(Duration::from_millis(700));
        assert!(h.engine.heartbeat(h.now, &chatty, chatty_i, &[], 0.0).is_ok());
        h.engine.tick(h.now);
    }
    let effects = h.engine.take_effects();
    let requeued: Vec<JobId> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Store(StoreOp::Requeued { id, .. }) => Some(*id),
            _ => None,
        })
        .collect();
    assert!(requeued.contains(&la.job_id) && requeued.contains(&lb.job_id), "{requeued:?}");
    assert!(h.engine.workers().get(&wa).is_none() || wa == chatty);
}

#[test]
fn attempts_are_bounded_and_the_reason_is_kept() {
    let mut h = Harness::new(10);
    let id = h.submit(Priority::Normal);
    for n in 1..=3 {
        let (w, i) = h.add_worker(&format!("w{n}"), 1);
        assert_eq!(h.dispatches().len(), 1);
        h.engine.worker_state(h.now, &w, i, WorkerState::Offline);
    }
    let failed = h.engine.take_effects().into_iter().find_map(|e| match e {
        Effect::Store(StoreOp::Finished { id: fid, state: JobState::Failed, error, .. }) if fid == id => error,
        _ => None,
    });
    let error = failed.unwrap_or_default();
    assert!(error.contains("gave up after 3 attempts") && error.contains("offline"), "{error}");
}

#[test]
fn cancel_reaches_the_worker_and_handing_back_does_not_count() {
    let mut h = Harness::new(10);
    let (w, _) = h.add_worker("w1", 1);
    let id = h.submit(Priority::Normal);
    let lease = h.dispatches()[0].1.clone();
    assert_eq!(h.engine.complete(h.now, &w, &lease, Outcome::HandedBack("draining".into())), Ok(false));
    let again = h.dispatches()[0].1.clone();
    assert_eq!(again.attempt, 1, "a handed-back unit is not an attempt");
    assert!(h.engine.cancel(h.now, id));
    let effects = h.engine.take_effects();
    assert!(effects.iter().any(|e| matches!(e,
        Effect::Control { control: Control::Cancel { job_id, attempt: 1 }, .. } if *job_id == id)));
    assert!(effects.iter().any(|e| matches!(e, Effect::Notify { event: JobEvent::Cancelled, .. })));
    assert!(!h.engine.cancel(h.now, id));
    assert!(h.engine.complete(h.now, &w, &again, Outcome::Success(json!(1))).is_err());
}

#[test]
fn restored_running_jobs_are_adopted_by_their_worker_or_requeued() {
    let mut h = Harness::new(10);
    let adopted = JobId::new();
    let orphan = JobId::new();
    let w1 = WorkerId::parse("w1").expect("id");
    let restored = |id, seq, lease| RestoredJob {
        id,
        spec: JobSpec::Noop(Default::default()),
        priority: Priority::Normal,
        seq,
        created_at_ms: 1,
        attempts: 1,
        lease,
        parent: None,
        done: None,
        retry_of: None,
        state: JobState::Queued,
        opts: None,
        run_at_ms: None,
        ended_parents: Vec::new(),
        priority_changes: 0,
    };
    h.engine.restore(
        h.now,
        vec![
            restored(adopted, 4, Some((w1.clone(), 1, tok("t1")))),
            restored(orphan, 5, Some((WorkerId::parse("gone").expect("id"), 1, tok("t2")))),
        ],
    );
    let w = test_worker("w1", 2, &[JobKind::Noop], h.now.mono);
    let claim = LeaseRef { job_id: adopted, attempt: 1, token: tok("t1") };
    let bogus = LeaseRef { job_id: orphan, attempt: 1, token: tok("nope") };
    let out = h
        .engine
        .register(
            h.now,
            Registration {
                worker: w1.clone(),
                instance: w.instance,
                caps: w.caps,
                running: vec![claim.clone(), bogus.clone()],
                session: None,
            },
        )
        .expect("registers");
    assert_eq!(out.adopted, vec![claim.clone()]);
    assert_eq!(out.revoked, vec![bogus]);
    assert!(h.dispatches().is_empty(), "the orphan belongs to another worker");
    for _ in 0..7 {
        h.advance(Duration::from_millis(900));
        assert!(h.engine.heartbeat(h.now, &w1, w.instance, std::slice::from_ref(&claim), 0.0).is_ok());
        h.engine.tick(h.now);
    }
    let d = h.dispatches();
    assert_eq!(d.len(), 1, "the orphan's grace ran out and it went to the free slot");
    assert_eq!((d[0].1.job_id, d[0].1.attempt), (orphan, 2));
    assert_eq!(h.engine.complete(h.now, &w1, &claim, Outcome::Success(json!(1))), Ok(false));
}

#[test]
fn a_restored_unit_its_worker_does_not_have_is_requeued_at_once() {
    let mut h = Harness::new(10);
    let id = JobId::new();
    let w1 = WorkerId::parse("w1").expect("id");
    h.engine.restore(
        h.now,
        vec![RestoredJob {
            id,
            spec: JobSpec::Noop(Default::default()),
            priority: Priority::Normal,
            seq: 0,
            created_at_ms: 1,
            attempts: 1,
            lease: Some((w1.clone(), 1, tok("t"))),
            parent: None,
            done: None,
            retry_of: None,
            state: JobState::Queued,
            opts: None,
            run_at_ms: None,
            ended_parents: Vec::new(),
            priority_changes: 0,
        }],
    );
    let w = test_worker("w1", 1, &[JobKind::Noop], h.now.mono);
    let reg = Registration { worker: w1, instance: w.instance, caps: w.caps, running: vec![], session: None };
    h.engine.register(h.now, reg).expect("registers");
    let d = h.dispatches();
    assert_eq!((d.len(), d.first().map(|x| x.1.attempt)), (1, Some(2)));
}

#[test]
fn units_in_flight_to_a_drained_worker_do_not_count_as_attempts() {
    let mut h = Harness::new(10);
    let (w, i) = h.add_worker("w1", 1);
    let id = h.submit(Priority::Normal);
    assert_eq!(h.dispatches().len(), 1);
    h.engine.worker_state(h.now, &w, i, WorkerState::Draining);
    h.engine.worker_state(h.now, &w, i, WorkerState::Offline);
    assert_eq!(h.engine.view(&id).map(|v| (v.state, v.attempts)), Some((JobState::Queued, 0)));
}

#[test]
fn a_live_workers_id_cannot_be_taken_by_another_instance() {
    let mut h = Harness::new(10);
    let (w1, first) = h.add_worker("w1", 1);
    let id = h.submit(Priority::Normal);
    let lease = h.dispatches().pop().expect("dispatched").1;
    let other = test_worker("w1", 1, &[JobKind::Noop], h.now.mono);
    let reg = |instance| Registration {
        worker: w1.clone(),
        instance,
        caps: other.caps.clone(),
        running: vec![],
        session: None,
    };
    assert_eq!(h.engine.register(h.now, reg(other.instance)), Err(LeaseError::InUse(w1.clone())));
    assert!(h.engine.check_lease(&w1, &lease).is_ok(), "the live worker keeps its lease");
    assert_eq!(h.engine.view(&id).map(|v| v.attempts), Some(1), "and its job its attempt");
    // Its instance id is no secret (it is in its status): without the
    // session it holds, even the same instance is refused.
    assert_eq!(h.engine.register(h.now, reg(first)), Err(LeaseError::InUse(w1.clone())));
    // The same instance may register again (a lost connection) with its session.
    let session = h.engine.workers().get(&w1).map(|w| w.session.clone());
    let old = session.clone().expect("a session");
    let same = Registration { running: vec![lease.clone()], session, ..reg(first) };
    let out = h.engine.register(h.now, same).expect("registers again");
    assert_eq!(out.adopted, vec![lease]);
    assert_ne!(out.session, old, "a new session for the new registration");
    assert_eq!(h.engine.check_session(&w1, Some(old.expose())), Err(LeaseError::Session(w1.clone())));
    assert_eq!(h.engine.check_session(&w1, None), Err(LeaseError::Session(w1.clone())));
    assert!(h.engine.check_session(&w1, Some(out.session.expose())).is_ok());
    // Once the live one is gone, the id is free.
    h.engine.worker_state(h.now, &w1, first, WorkerState::Offline);
    assert!(h.engine.register(h.now, reg(other.instance)).is_ok());
}

#[test]
fn nothing_is_handed_out_and_no_lease_runs_out_while_the_store_cannot_commit() {
    let mut h = Harness::new(100);
    let (w, _) = h.add_worker("w1", 1);
    let first = h.submit(Priority::Normal);
    assert_eq!(h.dispatches().len(), 1);
    h.engine.pause_dispatch(h.now, true);
    let (w2, _) = h.add_worker("w2", 1);
    let second = h.submit(Priority::Normal);
    assert!(h.dispatches().is_empty(), "paused: nothing goes out");
    // Far past the lease's term: the first unit's dispatch may not have
    // reached its worker, so it is not taken back.
    h.advance(h.engine.config().lease_ttl() * 4);
    h.engine.heartbeat(h.now, &w2, h.engine.workers().get(&w2).expect("w2").instance, &[], 0.0).expect("w2 is live");
    h.engine.heartbeat(h.now, &w, h.engine.workers().get(&w).expect("w1").instance, &[], 0.0).expect("w1 is live");
    h.engine.tick(h.now);
    assert!(h.engine.take_effects().iter().all(|e| !matches!(e, Effect::Store(StoreOp::Requeued { .. }))));
    assert_eq!(h.engine.view(&first).map(|v| v.state), Some(JobState::Running));

    h.engine.pause_dispatch(h.now, false);
    let out = h.dispatches();
    assert_eq!(out.iter().map(|(w, l)| (w.as_str(), l.job_id)).collect::<Vec<_>>(), [("w2", second)]);
    // The first lease got a full term again from the moment work resumed.
    h.advance(h.engine.config().lease_ttl() / 2);
    h.engine.tick(h.now);
    assert_eq!(h.engine.view(&first).map(|v| v.state), Some(JobState::Running));
}

#[test]
fn a_leases_term_starts_when_its_unit_goes_out() {
    let mut h = Harness::new(100);
    let (w, instance) = h.add_worker("w1", 1);
    let job = h.submit(Priority::Normal);
    let attempt = match h.engine.take_effects().into_iter().find(|e| matches!(e, Effect::Dispatch { .. })) {
        Some(Effect::Dispatch { unit, .. }) => unit.attempt,
        _ => panic!("dispatched"),
    };
    // The commit of its dispatch is slow: the unit has not gone out, and
    // its worker, which cannot have renewed it, is not held to its term.
    h.advance(h.engine.config().lease_ttl() * 4);
    h.engine.heartbeat(h.now, &w, instance, &[], 0.0).expect("w1 is live");
    h.engine.tick(h.now);
    assert_eq!(h.engine.view(&job).map(|v| (v.state, v.attempts)), Some((JobState::Running, 1)));
    // A notice for another attempt starts nothing.
    h.engine.sent(h.now, &[(job, attempt + 1)]);
    h.advance(h.engine.config().lease_ttl() * 2);
    h.engine.heartbeat(h.now, &w, instance, &[], 0.0).expect("w1 is live");
    h.engine.tick(h.now);
    assert_eq!(h.engine.view(&job).map(|v| v.state), Some(JobState::Running));

    h.engine.sent(h.now, &[(job, attempt)]);
    h.advance(h.engine.config().lease_ttl() / 2);
    h.engine.heartbeat(h.now, &w, instance, &[], 0.0).expect("w1 is live");
    h.engine.tick(h.now);
    assert_eq!(h.engine.view(&job).map(|v| v.state), Some(JobState::Running), "within its term");
    h.advance(h.engine.config().lease_ttl());
    h.engine.heartbeat(h.now, &w, instance, &[], 0.0).expect("w1 is live");
    h.engine.tick(h.now);
    assert!(
        h.engine.take_effects().iter().any(|e| matches!(e, Effect::Store(StoreOp::Requeued { .. }))),
        "a term that ran out after the unit went out takes the job back"
    );
}

#[test]
fn a_unit_that_did_not_go_out_goes_back_without_using_an_attempt() {
    let mut h = Harness::new(100);
    h.add_worker("w1", 1);
    let job = h.submit(Priority::Normal);
    let first = match h.engine.take_effects().into_iter().find(|e| matches!(e, Effect::Dispatch { .. })) {
        Some(Effect::Dispatch { unit, .. }) => unit.attempt,
        _ => panic!("dispatched"),
    };
    // A notice for an attempt that is not the current one changes nothing.
    h.engine.not_sent(h.now, &[(job, first + 1)]);
    assert!(h.engine.take_effects().is_empty());
    // This master did not hold the lead when the commit came back: the
    // unit was not published.
    h.engine.not_sent(h.now, &[(job, first)]);
    let effects = h.engine.take_effects();
    assert!(effects.iter().any(|e| matches!(e, Effect::Store(StoreOp::Requeued { attempts: 0, .. }))));
    let again = effects.iter().find_map(|e| match e {
        Effect::Dispatch { unit, .. } => Some(unit.attempt),
        _ => None,
    });
    assert_eq!(again, Some(first), "placed again as the same attempt number");
}

#[test]
fn a_new_priority_moves_a_waiting_job_and_is_refused_while_it_runs() {
    let mut h = Harness::new(100);
    let (w, _) = h.add_worker("w1", 1);
    let running = h.submit(Priority::Normal);
    let (a, b, c) = (h.submit(Priority::Normal), h.submit(Priority::Normal), h.submit(Priority::Low));
    let first = h.dispatches();
    let at = |h: &Harness| [a, b, c].map(|id| h.engine.view(&id).and_then(|v| v.position).expect("queued"));
    assert_eq!(at(&h), [0, 1, 2]);

    assert_eq!(h.engine.reprioritise(h.now, c, Priority::High), Ok(c));
    assert_eq!(at(&h), [1, 2, 0], "high goes first");
    let stored: Vec<StoreOp> = h
        .engine
        .take_effects()
        .into_iter()
        .filter_map(|e| if let Effect::Store(op) = e { Some(op) } else { None })
        .collect();
    let want = StoreOp::Reprioritised {
        id: c,
        priority: Priority::High,
        was: Priority::Low,
        state: JobState::Queued,
        attempts: 0,
        at_ms: h.now.wall_ms,
    };
    assert_eq!(stored, vec![want]);
    assert_eq!(h.engine.view(&c).map(|v| v.priority), Some(Priority::High));
    // Back among equals, a job takes its place by age.
    assert_eq!(h.engine.reprioritise(h.now, c, Priority::Normal), Ok(c));
    assert_eq!(at(&h), [0, 1, 2]);
    h.engine.take_effects();
    assert_eq!(h.engine.reprioritise(h.now, a, Priority::Normal), Ok(a));
    assert!(h.engine.take_effects().is_empty(), "the same priority changes nothing");

    assert_eq!(h.engine.reprioritise(h.now, running, Priority::High), Err(Unmovable::Running(running)));
    let gone = JobId::new();
    assert_eq!(h.engine.reprioritise(h.now, gone, Priority::High), Err(Unmovable::NotActive(gone)));

    // A job's priority changes a bounded number of times (each is history).
    for n in 2..MAX_PRIORITY_CHANGES {
        let to = if n % 2 == 0 { Priority::Low } else { Priority::Normal };
        assert_eq!(h.engine.reprioritise(h.now, c, to), Ok(c), "change {}", n + 1);
    }
    h.engine.take_effects();
    assert_eq!(h.engine.reprioritise(h.now, c, Priority::High), Err(Unmovable::TooManyChanges(c)));
    assert!(h.engine.take_effects().is_empty(), "a refused change stores nothing");
    assert_eq!(h.engine.reprioritise(h.now, c, Priority::Normal), Ok(c), "its own priority still answers");

    // Dispatch follows the new order.
    assert_eq!(h.engine.reprioritise(h.now, b, Priority::High), Ok(b));
    assert_eq!(h.engine.complete(h.now, &w, &first[0].1, Outcome::Success(json!({}))), Ok(false));
    assert_eq!(h.dispatches()[0].1.job_id, b);
}

const HOLD: Duration = Duration::from_secs(60);

#[test]
fn a_drain_no_one_follows_up_runs_out() {
    let mut h = Harness::new(100);
    let (w1, _) = h.add_worker("w1", 1);
    // Shorter than the heartbeat timeout: w1 stays registered throughout.
    let hold = Duration::from_millis(500);
    h.engine.retire_workers(h.now, vec![w1.clone()], hold);
    let job = h.submit(Priority::Normal);
    h.engine.tick(h.now);
    assert!(h.dispatches().is_empty(), "w1 is draining");
    h.advance(hold);
    h.engine.tick(h.now);
    assert_eq!(h.dispatches()[0].1.job_id, job, "the autoscaler never came back: w1 works again");
}

#[test]
fn a_retiring_worker_gets_no_new_work_until_a_new_instance_takes_its_id() {
    let mut h = Harness::new(100);
    let (w1, _) = h.add_worker("w1", 1);
    h.engine.retire_workers(h.now, vec![w1.clone()], HOLD);
    let job = h.submit(Priority::Normal);
    assert!(h.dispatches().is_empty(), "w1 is retiring");
    // Given back (the scale-down did not happen): it runs.
    h.engine.retire_workers(h.now, vec![], HOLD);
    assert_eq!(h.dispatches()[0].1.job_id, job);
    // A new task on the same slot registers as a new instance: not retiring.
    h.engine.retire_workers(h.now, vec![WorkerId::parse("w2").expect("id")], HOLD);
    h.add_worker("w2", 1);
    let next = h.submit(Priority::Normal);
    let d = h.dispatches();
    assert_eq!((d[0].0.as_str(), d[0].1.job_id), ("w2", next));
}

#[test]
fn time_the_master_did_not_run_counts_against_no_worker_and_no_lease() {
    let mut h = Harness::new(10);
    let (w, instance) = h.add_worker("w1", 1);
    let (gone, _) = h.add_worker("gone", 1);
    let job = h.submit(Priority::Normal);
    let (on, lease) = h.dispatches().remove(0);
    let held = if on == w { vec![lease] } else { vec![] };
    // Frozen for ten terms: both workers' deadlines passed while it slept.
    h.advance(h.engine.config().lease_ttl() * 10);
    h.engine.resumed(h.engine.config().lease_ttl() * 10);
    h.engine.tick(h.now);
    assert_eq!(h.engine.workers().len(), 2, "nobody is dropped for the master's sleep");
    assert_eq!(h.engine.view(&job).map(|v| (v.state, v.attempts)), Some((JobState::Running, 1)));
    // What w1 sent meanwhile comes in; the other worker stays silent and is
    // lost one term after the master woke, with its lease if it held it.
    for _ in 0..2 {
        h.engine.heartbeat(h.now, &w, instance, &held, 0.0).expect("w1 is live");
        h.advance(h.engine.config().lease_ttl() / 2);
    }
    h.engine.tick(h.now);
    assert!(h.engine.workers().get(&gone).is_none(), "the silent worker is lost");
    assert!(h.engine.workers().get(&w).is_some());
    let requeued = h.engine.take_effects().iter().any(|e| matches!(e, Effect::Store(StoreOp::Requeued { .. })));
    assert_eq!(requeued, on == gone, "only the lost worker's job goes back");
}
