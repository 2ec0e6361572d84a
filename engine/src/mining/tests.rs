//! The mining sub-machine driven directly: sizing, re-splitting, shares,
//! template replacement, and a property test that every template's finished
//! ranges never overlap and cover it exactly once it is fully mined.
#![allow(clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::json;

use super::*;
use faena_proto::mine::{MinedRange, Share};

fn params(start: u32, count: u64) -> MineParams {
    serde_json::from_value(
        json!({"key": "6b", "blob": "00".repeat(76), "difficulty": 10, "nonce_start": start, "nonce_count": count}),
    )
    .expect("params")
}

fn worker(name: &str) -> WorkerId {
    WorkerId::parse(name).expect("id")
}

fn one_job(p: MineParams) -> (Mining, JobId) {
    let mut m = Mining::default();
    let job = JobId::new();
    assert!(m.add(job, p));
    (m, job)
}

fn carve(m: &mut Mining, job: JobId, w: &str, speed: f64, total: f64, now: Instant) -> Option<(JobId, MineParams)> {
    let unit = JobId::new();
    m.carve(job, unit, &worker(w), speed, total, now).map(|c| (unit, c.params))
}

fn mined(hashes: u64, shares: Vec<Share>) -> MinedUnit {
    MinedUnit { hashes, hashrate: 100.0, elapsed_ms: 1, shares: VerifiedShares::assume_verified(shares) }
}

fn assert_exact_cover(done: &[MinedRange], start: u64, count: u64) {
    let mut ranges: Vec<(u64, u64)> = done.iter().map(|r| (u64::from(r.start), r.count)).collect();
    ranges.sort();
    let mut next = start;
    for (s, c) in ranges {
        assert_eq!(s, next, "no gap, no overlap");
        next = s + c;
    }
    assert_eq!(next, start + count);
}

#[test]
fn first_round_is_proportional_to_speed_and_units_shrink() {
    let now = Instant::now();
    let (mut m, job) = one_job(params(1000, 1_000_000));
    // A at 300 H/s and B at 100 H/s: A gets 3/8 of the range, B 1/8 of what is left.
    let (_, a) = carve(&mut m, job, "a", 300.0, 400.0, now).expect("unit");
    let a = a.work().expect("valid");
    assert_eq!((a.start, a.count), (1000, 9000), "capped at 30 s of A's work");
    let (mut m, job) = one_job(params(0, 10_000));
    let (_, a) = carve(&mut m, job, "a", 300.0, 400.0, now).expect("unit");
    let (_, b) = carve(&mut m, job, "b", 100.0, 400.0, now).expect("unit");
    let (a, b) = (a.work().expect("a"), b.work().expect("b"));
    assert_eq!((a.start, a.count), (0, 3750));
    assert_eq!((b.start, b.count), (3750, 782));
    // At the end, units never fall under a second of work.
    let (_, c) = carve(&mut m, job, "c", 300.0, 400.0, now).expect("unit");
    assert!(c.work().expect("c").count >= 300);
}

#[test]
fn given_back_ranges_are_handed_out_again_and_everything_is_covered_once() {
    let now = Instant::now();
    let (mut m, job) = one_job(params(0, 5_000));
    let mut n = 0;
    let mut verdict = Verdict::Continue(None);
    while let Some((unit, p)) = carve(&mut m, job, "w", 100.0, 200.0, now) {
        n += 1;
        if n == 2 {
            assert!(matches!(m.lost(&unit, 1, now), Verdict::Requeue(_)), "the range waits again");
            continue;
        }
        verdict = m.done(&unit, mined(p.work().expect("valid").count, vec![]), now).0;
    }
    let Verdict::Finish(out) = verdict else { panic!("finished: {verdict:?}") };
    assert_exact_cover(&out.ranges, 0, 5_000);
    assert_eq!(out.hashes, 5_000);
    assert_eq!(out.ranges.iter().map(|r| r.count).sum::<u64>(), 5_000);
}

#[test]
fn shares_count_once_and_max_shares_finishes_the_job() {
    let now = Instant::now();
    let mut p = params(0, 100);
    p.max_shares = Some(2);
    let (mut m, job) = one_job(p);
    let (unit, up) = carve(&mut m, job, "w", 10.0, 10.0, now).expect("unit");
    assert_eq!(up.max_shares, Some(2));
    let share = |nonce| Share { nonce, hash: "aa".into() };
    let twice = VerifiedShares::assume_verified(vec![share(3), share(3)]);
    let (shown, verdict) = m.progress(&unit, 5, 5.0, &twice, now);
    assert_eq!(shown.map(|p| (p.shares, p.new_shares.len())), Some((1, 1)), "a nonce counts once");
    assert_eq!(verdict, Verdict::Continue(None));
    let again = VerifiedShares::assume_verified(vec![share(3), share(7)]);
    let (shown, verdict) = m.progress(&unit, 9, 5.0, &again, now);
    assert_eq!(shown.map(|p| (p.shares, p.new_shares.len())), Some((2, 1)));
    let Verdict::Finish(out) = verdict else { panic!("max_shares reached: {verdict:?}") };
    assert_eq!(out.shares.iter().map(|s| s.nonce).collect::<Vec<_>>(), vec![3, 7]);
    let ended = m.end(&job).expect("ended");
    assert_eq!(ended.units, vec![(unit, worker("w"))], "the unit still out is stopped by the engine");
    assert!(m.job_of(&unit).is_none());
}

#[test]
fn a_finished_units_stored_result_has_every_share_of_its_range() {
    let now = Instant::now();
    let (mut m, job) = one_job(params(0, 1_000));
    let (a, ap) = carve(&mut m, job, "a", 10.0, 20.0, now).expect("unit");
    let (b, _) = carve(&mut m, job, "b", 10.0, 20.0, now).expect("unit");
    let a_start = ap.nonce_start.expect("start");
    let early = Share { nonce: a_start + 1, hash: "cd".into() };
    m.progress(&a, 1, 1.0, &VerifiedShares::assume_verified(vec![early]), now);
    let late = Share { nonce: a_start + 2, hash: "ef".into() };
    let (_, stored) = m.done(&a, mined(10, vec![late]), now);
    let nonces: Vec<u32> = stored.expect("stored").shares.iter().map(|s| s.nonce).collect();
    assert_eq!(nonces, vec![a_start + 1, a_start + 2]);
    assert!(m.job_of(&b).is_some());
}

#[test]
fn a_new_template_retires_the_old_units_and_late_shares_count_as_stale() {
    let now = Instant::now();
    let (mut m, job) = one_job(params(0, 10_000));
    let (a, _) = carve(&mut m, job, "a", 100.0, 200.0, now).expect("unit");
    let (b, _) = carve(&mut m, job, "b", 100.0, 200.0, now).expect("unit");
    m.done(&b, mined(100, vec![Share { nonce: 5000, hash: "aa".into() }]), now);
    let mut next = params(0, 2_000);
    next.blob = "01".repeat(76);
    let retired = m.replace_template(&job, next, now, Duration::from_secs(5)).expect("replaced");
    assert_eq!(retired, vec![(a, worker("a"))], "only what was still out is retired");
    assert!(m.job_of(&a).is_none());
    assert_eq!(m.template_id(&job), Some(1));
    assert!(m.known_nonces(&a).is_empty());
    let stale = VerifiedShares::assume_verified(vec![Share { nonce: 17, hash: "bb".into() }]);
    assert_eq!(m.late_shares(&job, 0, stale.len(), now + Duration::from_secs(1)), Late::Stale);
    assert_eq!(m.late_shares(&job, 0, stale.len(), now + Duration::from_secs(6)), Late::Expired);
    // The new template starts from its own range; the old shares stay accepted.
    let (c, cp) = carve(&mut m, job, "a", 100.0, 100.0, now).expect("unit of the new template");
    assert_eq!((cp.nonce_start, cp.blob.as_str()), (Some(0), "01".repeat(76).as_str()));
    let mut verdict = m.done(&c, mined(cp.nonce_count.expect("count"), vec![]), now).0;
    while let Some((u, p)) = carve(&mut m, job, "a", 100.0, 100.0, now) {
        verdict = m.done(&u, mined(p.nonce_count.expect("count"), vec![]), now).0;
    }
    let Verdict::Finish(out) = verdict else { panic!("finished: {verdict:?}") };
    assert_exact_cover(&out.ranges, 0, 2_000);
    assert_eq!((out.shares.len(), out.stale_shares), (1, 1));
}

/// What happens to the job in one step of the property test.
#[derive(Debug, Clone)]
enum Event {
    /// A participant joins (or asks for more work): it gets a slice if it has none.
    Join(u8),
    /// A participant finishes its slice.
    Finish(u8),
    /// A participant's slice is lost (it died or was cut off).
    Lose(u8),
    /// A participant leaves for good: what it holds is lost.
    Leave(u8),
    /// A new template with this range size.
    Replace(u16),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        4 => (0u8..5).prop_map(Event::Join),
        4 => (0u8..5).prop_map(Event::Finish),
        1 => (0u8..5).prop_map(Event::Lose),
        1 => (0u8..5).prop_map(Event::Leave),
        1 => (1u16..3000).prop_map(Event::Replace),
    ]
}

proptest! {
    #[test]
    fn finished_ranges_of_every_template_never_overlap_and_cover_it_once_done(
        first in 1u64..5000,
        speeds in proptest::collection::vec(1.0f64..500.0, 5),
        events in proptest::collection::vec(event(), 0..120),
    ) {
        let now = Instant::now();
        let (mut m, job) = one_job(params(0, first));
        let total: f64 = speeds.iter().sum();
        let mut held: BTreeMap<u8, (JobId, u64)> = BTreeMap::new();
        // The finished ranges of each template: (template, start, count).
        let mut finished: Vec<(u32, u64, u64)> = Vec::new();
        let mut ranges: BTreeMap<u32, u64> = BTreeMap::from([(0, first)]);
        let mut template = 0u32;
        let mut done = None;
        for ev in events {
            if done.is_some() {
                break;
            }
            match ev {
                Event::Join(p) if !held.contains_key(&p) => {
                    let unit = JobId::new();
                    if let Some(c) = m.carve(job, unit, &worker(&format!("p{p}")), speeds[p as usize], total, now) {
                        let w = c.params.work().expect("valid slice");
                        held.insert(p, (unit, u64::from(w.start)));
                        prop_assert!(w.end() <= ranges[&template], "a slice lies inside its template");
                    }
                }
                Event::Finish(p) => {
                    if let Some((unit, start)) = held.remove(&p) {
                        let count = m.unit_job(&unit).and_then(|(_, j)| j.template.ledger.slice(&unit).map(|s| s.count));
                        let count = count.expect("held slices are out");
                        finished.push((template, start, count));
                        if let Verdict::Finish(out) = m.done(&unit, mined(count, vec![]), now).0 {
                            done = Some(out);
                        }
                    }
                }
                Event::Lose(p) | Event::Leave(p) => {
                    if let Some((unit, _)) = held.remove(&p) {
                        prop_assert!(!matches!(m.lost(&unit, 1, now), Verdict::Finish(_) | Verdict::Fail(_)));
                    }
                }
                Event::Replace(size) => {
                    let retired = m.replace_template(&job, params(0, u64::from(size)), now, Duration::from_secs(1));
                    let retired = retired.expect("a valid template");
                    prop_assert_eq!(retired.len(), held.len(), "every slice out is retired");
                    held.clear();
                    template += 1;
                    ranges.insert(template, u64::from(size));
                }
                Event::Join(_) => {}
            }
        }
        // Run the current template to its end with participant 0.
        while done.is_none() {
            for (unit, _) in std::mem::take(&mut held).into_values() {
                m.lost(&unit, 1, now);
            }
            let unit = JobId::new();
            let c = m.carve(job, unit, &worker("p0"), 100.0, 100.0, now).expect("range left while not done");
            let w = c.params.work().expect("valid");
            finished.push((template, u64::from(w.start), w.count));
            if let Verdict::Finish(out) = m.done(&unit, mined(w.count, vec![]), now).0 {
                done = Some(out);
            }
        }
        let out = done.expect("finished");
        for (t, size) in &ranges {
            let mut mine: Vec<(u64, u64)> =
                finished.iter().filter(|f| f.0 == *t).map(|f| (f.1, f.2)).collect();
            mine.sort();
            let mut next = 0u64;
            for (s, c) in &mine {
                prop_assert!(*s >= next, "template {} ranges overlap: {:?}", t, mine);
                next = s + c;
            }
            prop_assert!(next <= *size, "template {} ranges stay inside it", t);
            if *t == template {
                prop_assert_eq!(mine.iter().map(|r| r.1).sum::<u64>(), *size, "the finished template is covered exactly");
            }
        }
        assert_exact_cover(&out.ranges, 0, ranges[&template]);
    }
}
