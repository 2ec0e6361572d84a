//! The autoscaler's decisions under a fake clock.
#![allow(clippy::expect_used)]

use std::time::{Duration, Instant};

use super::*;

fn settings() -> Settings {
    Settings {
        min: 2,
        max: 5,
        wait: Duration::from_secs(10),
        cooldown: Duration::from_secs(60),
        settle: Duration::from_secs(90),
    }
}

fn workers(running: &[u32]) -> Vec<WorkerLoad> {
    running
        .iter()
        .enumerate()
        .map(|(i, r)| WorkerLoad { id: format!("worker-{}", i + 1), slot: Some(i as u32 + 1), slots: 1, running: *r })
        .collect()
}

fn waiting(queued: usize, wait_s: u64) -> Vec<KindLoad> {
    vec![KindLoad { kind: "noop".into(), queued, oldest_wait_ms: wait_s * 1000 }]
}

fn obs(replicas: u32, running: &[u32], kinds: Vec<KindLoad>) -> Observed {
    Observed { replicas, workers: workers(running), kinds }
}

#[test]
fn a_backlog_that_waits_too_long_scales_up_to_what_it_needs_within_max() {
    let mut p = Policy::new(settings());
    let t0 = Instant::now();
    // Waiting, but not for long yet.
    assert_eq!(p.decide(t0, &obs(2, &[1, 1], waiting(18, 9))), Decision::Hold);
    match p.decide(t0, &obs(2, &[1, 1], waiting(18, 11))) {
        Decision::Up { to: 5, reason } => assert!(reason.contains("18 noop waiting, the longest 11.0 s"), "{reason}"),
        other => panic!("expected up to 5, got {other:?}"),
    }
    // Two jobs need two more workers, not MAX.
    let mut p = Policy::new(settings());
    assert!(matches!(p.decide(t0, &obs(2, &[1, 1], waiting(2, 30))), Decision::Up { to: 4, .. }));
    // At MAX it holds however long jobs wait.
    let mut p = Policy::new(settings());
    assert_eq!(p.decide(t0, &obs(5, &[1; 5], waiting(50, 300))), Decision::Hold);
}

#[test]
fn after_scaling_up_it_waits_for_the_new_workers_before_adding_more() {
    let mut p = Policy::new(Settings { max: 10, ..settings() });
    let t0 = Instant::now();
    assert!(matches!(p.decide(t0, &obs(2, &[1, 1], waiting(3, 20))), Decision::Up { to: 5, .. }));
    // Swarm has the new replicas, the workers are still starting: hold.
    let t1 = t0 + Duration::from_secs(30);
    assert_eq!(p.decide(t1, &obs(5, &[1, 1], waiting(3, 50))), Decision::Hold);
    // They registered and jobs still wait: more.
    assert!(matches!(p.decide(t1, &obs(5, &[1; 5], waiting(4, 50))), Decision::Up { to: 9, .. }));
    // Or they never came: after the settle period it tries again.
    let mut p = Policy::new(Settings { max: 10, ..settings() });
    assert!(matches!(p.decide(t0, &obs(2, &[1, 1], waiting(3, 20))), Decision::Up { .. }));
    let late = t0 + Duration::from_secs(91);
    assert!(matches!(p.decide(late, &obs(5, &[1, 1], waiting(3, 111))), Decision::Up { to: 8, .. }));
}

#[test]
fn it_scales_down_only_after_a_calm_cool_down_and_drains_the_highest_slots() {
    let mut p = Policy::new(settings());
    let t0 = Instant::now();
    assert!(matches!(p.decide(t0, &obs(2, &[1, 1], waiting(9, 20))), Decision::Up { to: 5, .. }));
    // The burst is done: all five idle, but the last change was just now.
    let idle = obs(5, &[0; 5], vec![]);
    assert_eq!(p.decide(t0 + Duration::from_secs(5), &idle), Decision::Hold);
    // Calm since 5 s; at 64 s the change is old enough but the calm is not.
    assert_eq!(p.decide(t0 + Duration::from_secs(64), &idle), Decision::Hold);
    // A job arriving resets the calm.
    assert_eq!(p.decide(t0 + Duration::from_secs(65), &obs(5, &[0; 5], waiting(1, 1))), Decision::Hold);
    assert_eq!(p.decide(t0 + Duration::from_secs(66), &idle), Decision::Hold);
    assert_eq!(p.decide(t0 + Duration::from_secs(125), &idle), Decision::Hold);
    match p.decide(t0 + Duration::from_secs(126), &idle) {
        Decision::Down { to: 2, reason, remove } => {
            assert_eq!(remove, ["worker-3", "worker-4", "worker-5"]);
            assert!(reason.contains("5 of 5 workers were idle for 60 s"), "{reason}");
        }
        other => panic!("expected down to 2, got {other:?}"),
    }
    // Never below MIN: two idle workers at MIN stay.
    assert_eq!(p.decide(t0 + Duration::from_secs(700), &obs(2, &[0, 0], vec![])), Decision::Hold);
}

#[test]
fn replicas_still_starting_are_not_taken_away() {
    let mut p = Policy::new(settings());
    let t0 = Instant::now();
    assert!(matches!(p.decide(t0, &obs(2, &[1, 1], waiting(9, 20))), Decision::Up { to: 5, .. }));
    // The burst ended before the three new workers registered: hold, however long, within the settle time.
    for s in [5, 30, 89] {
        assert_eq!(p.decide(t0 + Duration::from_secs(s), &obs(5, &[0, 0], vec![])), Decision::Hold, "at {s} s");
    }
    // They registered at 89 s: the cool-down counts from there.
    assert_eq!(p.decide(t0 + Duration::from_secs(89), &obs(5, &[0; 5], vec![])), Decision::Hold);
    assert_eq!(p.decide(t0 + Duration::from_secs(148), &obs(5, &[0; 5], vec![])), Decision::Hold);
    assert!(matches!(p.decide(t0 + Duration::from_secs(149), &obs(5, &[0; 5], vec![])), Decision::Down { to: 2, .. }));
    assert_eq!(p.decide(t0 + Duration::from_secs(600), &obs(2, &[0, 0], vec![])), Decision::Hold);
}

#[test]
fn busy_workers_are_kept_and_a_service_outside_the_range_is_brought_into_it() {
    let mut p = Policy::new(settings());
    let t0 = Instant::now();
    // 4 replicas, 3 busy, 1 idle: down by one after the cool-down.
    let o = obs(4, &[1, 0, 1, 1], vec![]);
    assert_eq!(p.decide(t0, &o), Decision::Hold);
    assert!(matches!(p.decide(t0 + Duration::from_secs(60), &o), Decision::Down { to: 3, .. }));
    let mut p = Policy::new(settings());
    assert!(matches!(p.decide(t0, &obs(1, &[0], vec![])), Decision::Up { to: 2, .. }));
    match p.decide(t0, &obs(7, &[1; 7], vec![])) {
        Decision::Down { to: 5, remove, .. } => assert_eq!(remove, ["worker-6", "worker-7"]),
        other => panic!("expected down to 5, got {other:?}"),
    }
    assert_eq!(slot_of("worker-12"), Some(12));
    assert_eq!(slot_of("laptop"), None);
}
