use std::time::{Duration, Instant};

use faena_proto::mine::MineParams;
use faena_proto::secret::Secret;
use faena_proto::stratum::LoginParams;

use super::*;

fn rules() -> Rules {
    Rules {
        rate: 1.0,
        burst: 4.0,
        idle: Duration::from_secs(20),
        login_timeout: Duration::from_secs(5),
        invalid_limit: 3,
        min_difficulty: 10,
    }
}

fn params() -> MineParams {
    MineParams {
        key: "00".into(),
        blob: "00".repeat(76),
        target: None,
        difficulty: Some(100),
        nonce_offset: None,
        nonce_start: None,
        nonce_count: None,
        max_shares: None,
        next_key: None,
    }
}

fn login(name: &str, pass: Option<&str>, algo: Option<&[&str]>) -> LoginParams {
    LoginParams {
        login: name.into(),
        pass: pass.map(Into::into),
        agent: None,
        algo: algo.map(|a| a.iter().map(|s| (*s).to_owned()).collect()),
        rigid: None,
    }
}

#[test]
fn a_silent_miner_is_dropped_at_its_idle_time_whatever_is_sent_to_it() {
    let t0 = Instant::now();
    let mut m = Miner::new(rules(), 100, t0);
    assert_eq!(m.deadline(), t0 + Duration::from_secs(5), "the login deadline first");
    // Lines before the login do not buy more time to log in.
    assert_eq!(m.admit(t0 + Duration::from_secs(1)), Admit::Go);
    assert_eq!(m.deadline(), t0 + Duration::from_secs(5));
    let t1 = t0 + Duration::from_secs(2);
    m.logged_in(t1);
    assert_eq!(m.deadline(), t1 + Duration::from_secs(20));
    // Jobs and retargets every few seconds change nothing: only the miner's
    // own lines do.
    for s in 1..=30 {
        let _ = m.retarget(Duration::from_secs(1), t1 + Duration::from_secs(s));
        m.push_job(s, 100, 1, params());
    }
    assert_eq!(m.deadline(), t1 + Duration::from_secs(20), "a silent miner is dropped after 20 s");
    let t2 = t1 + Duration::from_secs(15);
    assert_eq!(m.admit(t2), Admit::Go);
    assert_eq!(m.deadline(), t2 + Duration::from_secs(20), "a keepalive moves it");
}

#[test]
fn requests_past_the_rate_are_refused_then_cut_off() {
    let t0 = Instant::now();
    let mut m = Miner::new(rules(), 100, t0);
    let admits: Vec<Admit> = (0..10).map(|_| m.admit(t0)).collect();
    assert_eq!(&admits[..4], &[Admit::Go; 4], "the burst");
    assert_eq!(&admits[4..8], &[Admit::Slow; 4], "refused, still connected");
    assert_eq!(admits[9], Admit::Cut, "far past the rate");
    let mut calm = Miner::new(rules(), 100, t0);
    for s in 0..100 {
        assert_eq!(calm.admit(t0 + Duration::from_secs(s)), Admit::Go, "one a second is within the rate");
    }
}

#[test]
fn logins_are_checked_before_a_seat_is_taken() {
    let pass = Secret::new("let-me-mine");
    assert_eq!(check_login(&login(" rig-1 ", Some("let-me-mine"), None), Some(&pass)), Ok("rig-1"));
    assert_eq!(check_login(&login("rig-1", Some("nope"), None), Some(&pass)), Err(LoginRefused::Password));
    assert_eq!(check_login(&login("rig-1", None, None), Some(&pass)), Err(LoginRefused::Password));
    assert_eq!(check_login(&login("rig-1", None, None), None), Ok("rig-1"));
    assert_eq!(check_login(&login("", None, None), None), Err(LoginRefused::Name));
    assert_eq!(check_login(&login(&"x".repeat(MAX_NAME + 1), None, None), None), Err(LoginRefused::Name));
    assert_eq!(check_login(&login("a\u{7}b", None, None), None), Err(LoginRefused::Name));
    assert_eq!(check_login(&login("rig", None, Some(&["cn/r"])), None), Err(LoginRefused::Algo));
    assert_eq!(check_login(&login("rig", None, Some(&["cn/r", "rx/0"])), None), Ok("rig"));
}

#[test]
fn a_submit_is_prechecked_before_it_costs_a_hash() {
    let t0 = Instant::now();
    let mut m = Miner::new(rules(), 100, t0);
    let job = m.push_job(7, 100, 1, params());
    let hash = "ab".repeat(32);
    let slot = 0x05u8;
    let c = m.precheck(&job, "01000005", &hash, slot).expect("in the slot");
    assert_eq!(c.nonce, 0x0500_0001, "little-endian, as XMRig sends it");
    assert_eq!(m.precheck("zz", "01000005", &hash, slot), Err(Precheck::UnknownJob));
    assert!(!Precheck::UnknownJob.is_invalid_share(), "a race with a new job is no offence");
    assert_eq!(m.precheck(&job, "0100", &hash, slot), Err(Precheck::Nonce));
    assert_eq!(m.precheck(&job, "01000005", "abcd", slot), Err(Precheck::Result));
    assert_eq!(m.precheck(&job, "01000005", &"zz".repeat(32), slot), Err(Precheck::Result));
    assert_eq!(m.precheck(&job, "01000006", &hash, slot), Err(Precheck::Slice));
    m.accepted(&c, true);
    assert_eq!(m.precheck(&job, "01000005", &hash, slot), Err(Precheck::Duplicate));
    // Only the last JOBS_KEPT jobs can be submitted to.
    for seq in 0..JOBS_KEPT as u64 {
        m.push_job(seq, 100, 1, params());
    }
    assert_eq!(m.precheck(&job, "02000005", &hash, slot), Err(Precheck::UnknownJob));
}

#[test]
fn invalid_shares_and_garbage_have_limits() {
    let mut m = Miner::new(rules(), 100, Instant::now());
    assert_eq!((0..4).map(|_| m.invalid()).collect::<Vec<_>>(), [false, false, false, true]);
    assert!(!(0..GARBAGE_LIMIT).any(|_| m.garbage()));
    assert!(m.garbage(), "one malformed line too many");
}

#[test]
fn vardiff_follows_the_shares_within_four_times_each_way() {
    let t0 = Instant::now();
    let mut m = Miner::new(rules(), 100, t0);
    let interval = Duration::from_secs(10);
    assert_eq!(m.retarget(interval, t0 + Duration::from_secs(60)), None, "not before the login");
    m.logged_in(t0);
    let job = m.push_job(1, 100, 1, params());
    // Eight shares of difficulty 100 in 2 s: far faster than one per 10 s.
    for n in 0..8u32 {
        let nonce = format!("{:08x}", n.swap_bytes());
        let c = m.precheck(&job, &nonce, &"00".repeat(32), 0).expect("ok");
        m.accepted(&c, true);
    }
    assert_eq!(m.retarget(interval, t0 + Duration::from_secs(2)), Some(400), "at most 4× up");
    // Silence for four intervals: down, at most 4×, never below the minimum.
    assert_eq!(m.retarget(interval, t0 + Duration::from_secs(42)), Some(100));
    assert_eq!(m.retarget(interval, t0 + Duration::from_secs(82)), Some(25));
    assert_eq!(m.retarget(interval, t0 + Duration::from_secs(122)), Some(10));
    assert_eq!(m.retarget(interval, t0 + Duration::from_secs(162)), None, "already at the minimum");
    m.over_budget();
    assert_eq!(m.difficulty, 20, "over the budget: fewer shares asked for");
}
