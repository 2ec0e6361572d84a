use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use super::*;

fn rules() -> AddressRules {
    AddressRules {
        max_connections: 100,
        max_per_address: 3,
        invalid_limit: 10,
        ban: Duration::from_secs(600),
        budget_share: 0.25,
    }
}

fn ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x7f00_0000 + n))
}

#[test]
fn connections_are_capped_per_address_and_in_all() {
    let t = Instant::now();
    let mut a = Addresses::new(rules());
    for _ in 0..3 {
        a.connect(ip(1), t).expect("within the address's limit");
    }
    assert_eq!(a.connect(ip(1), t), Err(Refusal::TooMany(3)));
    a.disconnect(ip(1), t);
    a.connect(ip(1), t).expect("a place came free");
    for n in 2..=98 {
        a.connect(ip(n), t).expect("room");
    }
    assert_eq!(a.connections(), 100);
    assert_eq!(a.connect(ip(500), t), Err(Refusal::Full));
    for n in 2..=98 {
        a.disconnect(ip(n), t);
    }
    for _ in 0..3 {
        a.disconnect(ip(1), t);
    }
    assert_eq!(a.connections(), 0);
    assert_eq!(a.remembered(), 0, "nothing left to remember about anyone");
}

#[test]
fn junk_shares_ban_an_address_across_reconnects_for_the_ban_time() {
    let t = Instant::now();
    let mut a = Addresses::new(rules());
    // Ten junk shares a connection, then a new connection: the count
    // belongs to the address, not the connection.
    let mut banned_after = None;
    'outer: for round in 0..10 {
        a.connect(ip(7), t).expect("not banned yet");
        for n in 0..10 {
            if a.verdict(ip(7), false, t) {
                banned_after = Some(round * 10 + n + 1);
                a.disconnect(ip(7), t);
                break 'outer;
            }
        }
        a.disconnect(ip(7), t);
    }
    assert_eq!(banned_after, Some(11), "past the limit with more invalid than valid");
    assert!(a.is_banned(ip(7), t + Duration::from_secs(599)));
    assert_eq!(a.connect(ip(7), t + Duration::from_secs(599)), Err(Refusal::Banned));
    assert!(!a.is_banned(ip(7), t + Duration::from_secs(600)), "bans end");
    a.connect(ip(7), t + Duration::from_secs(600)).expect("welcome back");
}

#[test]
fn an_honest_address_with_a_few_bad_shares_is_not_banned() {
    let t = Instant::now();
    let mut a = Addresses::new(rules());
    for _ in 0..100 {
        assert!(!a.verdict(ip(3), true, t));
    }
    for _ in 0..50 {
        assert!(!a.verdict(ip(3), false, t), "far more valid than invalid");
    }
    // A new window starts the count again.
    let later = t + Duration::from_secs(601);
    let banned = (0..11).map(|_| a.verdict(ip(3), false, later)).collect::<Vec<_>>();
    assert_eq!(banned.iter().filter(|b| **b).count(), 1);
    assert!(banned[10]);
}

#[test]
fn each_address_gets_its_part_of_the_verification_budget() {
    let t = Instant::now();
    let mut a = Addresses::new(rules());
    // 40 shares/s for all: 10/s for one address, bursts of 4 s.
    let taken = (0..100).filter(|_| a.take_quota(ip(1), 40.0, t)).count();
    assert_eq!(taken, 40);
    assert!(a.take_quota(ip(2), 40.0, t), "another address has its own part");
    let later = t + Duration::from_millis(500);
    assert_eq!((0..100).filter(|_| a.take_quota(ip(1), 40.0, later)).count(), 5);
    // A small budget still lets a miner's first shares through.
    assert_eq!((0..100).filter(|_| a.take_quota(ip(9), 2.0, t)).count(), 16);
}

#[test]
fn a_quota_token_given_back_is_there_again_and_only_once() {
    let t = Instant::now();
    let mut a = Addresses::new(rules());
    assert_eq!((0..100).filter(|_| a.take_quota(ip(1), 40.0, t)).count(), 40);
    a.give_back_quota(ip(1));
    assert!(a.take_quota(ip(1), 40.0, t), "the token given back");
    assert!(!a.take_quota(ip(1), 40.0, t));
    // Up to the burst, and an address never seen gets no record from it.
    (0..100).for_each(|_| a.give_back_quota(ip(1)));
    assert_eq!((0..100).filter(|_| a.take_quota(ip(1), 40.0, t)).count(), 40);
    let known = a.remembered();
    a.give_back_quota(ip(7));
    assert_eq!(a.remembered(), known);
}

#[test]
fn the_book_stays_bounded_under_many_addresses() {
    let t = Instant::now();
    let mut a = Addresses::new(AddressRules { max_connections: 10, ..rules() });
    let cap = a.capacity();
    // Every address earns a ban, more addresses than the book holds.
    for n in 0..(cap as u32 * 3) {
        a.ban(ip(n), t + Duration::from_millis(u64::from(n)));
        assert!(a.remembered() <= cap);
    }
    assert!(a.is_banned(ip(cap as u32 * 3 - 1), t + Duration::from_secs(1)), "the newest bans are kept");
    // Connected addresses are never the ones forgotten.
    let mut b = Addresses::new(AddressRules { max_connections: 10, ..rules() });
    b.connect(ip(999_999), t).expect("room");
    for n in 0..(cap as u32 * 2) {
        b.ban(ip(n), t);
    }
    b.disconnect(ip(999_999), t);
    assert_eq!(b.connections(), 0);
}
