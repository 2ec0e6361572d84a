use super::*;
use serde_json::json;

#[tokio::test]
async fn accepts_real_shares_and_rejects_every_kind_of_fake() {
    let params: MineParams = serde_json::from_value(json!({
        "key": "6b6579", "blob": "02".repeat(76), "difficulty": 3, "nonce_start": 100, "nonce_count": 30
    }))
    .expect("params");
    let work = params.work().expect("work");
    // Find real shares the way a worker would.
    let material = Arc::new(Material::build(Flags::detect(), Mode::Light, &work.key, 1).expect("material"));
    let mut vm = material.vm().expect("vm");
    let mut real = Vec::new();
    let mut miss = None;
    for nonce in 100..130u32 {
        let hash = vm.hash(&work.input(nonce));
        if meets(&hash, work.target) {
            real.push(Share { nonce, hash: encode_hex(&hash) });
        } else {
            miss = Some(Share { nonce, hash: encode_hex(&hash) });
        }
    }
    assert!(real.len() >= 2, "difficulty 3 over 30 nonces");
    let miss = miss.expect("some nonce misses difficulty 3");
    let verifier = Verifier::new(2);
    let mut shares = real.clone();
    shares.push(real[0].clone());
    let checked = verifier.check(&params, &HashSet::new(), shares).await;
    assert_eq!(checked.valid.len(), real.len(), "{:?}", checked.invalid);
    assert!(checked.invalid.is_empty());

    let forged = Share { nonce: real[1].nonce, hash: "00".repeat(32) };
    let wrong_nonce = Share { nonce: real[0].nonce + 1000, ..real[0].clone() };
    let taken = [real[0].nonce, real[1].nonce, miss.nonce];
    let free = (100..130u32).find(|n| !taken.contains(n)).expect("a free nonce");
    let garbage = Share { nonce: free, hash: "zz".into() };
    let other = Share { nonce: real[1].nonce ^ 1, hash: real[1].hash.clone() };
    let known: HashSet<u32> = [real[0].nonce].into();
    let checked = verifier.check(&params, &known, vec![real[0].clone(), forged, wrong_nonce, garbage, miss]).await;
    assert!(checked.valid.is_empty());
    let reasons: Vec<String> = checked.invalid.iter().map(|(_, r)| r.to_string()).collect();
    assert!(reasons.iter().any(|r| r.contains("outside")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("hex")), "{reasons:?}");
    assert!(reasons.iter().filter(|r| r.contains("mismatch") || r.contains("target")).count() >= 2, "{reasons:?}");
    let checked = verifier.check(&params, &HashSet::new(), vec![other]).await;
    assert_eq!(checked.invalid.len(), 1, "a real hash under another nonce is rejected");
}

#[tokio::test]
async fn fast_mode_verifies_what_light_mode_found() {
    let params: MineParams = serde_json::from_value(json!({
        "key": "666173742d6d6f6465", "blob": "04".repeat(76), "difficulty": 2, "nonce_start": 0, "nonce_count": 16
    }))
    .expect("params");
    let work = params.work().expect("work");
    let material = Arc::new(Material::build(Flags::detect(), Mode::Light, &work.key, 1).expect("material"));
    let mut vm = material.vm().expect("vm");
    let mut shares = Vec::new();
    for nonce in 0..16u32 {
        let hash = vm.hash(&work.input(nonce));
        if meets(&hash, work.target) {
            shares.push(Share { nonce, hash: encode_hex(&hash) });
        }
    }
    assert!(!shares.is_empty(), "difficulty 2 over 16 nonces");
    let mut forged = shares[0].clone();
    forged.hash = "00".repeat(32);
    forged.nonce = (0..16u32).find(|n| !shares.iter().any(|s| s.nonce == *n)).expect("a non-share nonce");
    // The dataset takes a while to build (all threads); the checks are quick after.
    let verifier = Verifier::with_mode(2, Mode::Fast).with_deadline(Duration::from_secs(600));
    let checked = verifier.check(&params, &HashSet::new(), [shares.clone(), vec![forged]].concat()).await;
    assert_eq!(checked.valid.len(), shares.len(), "{:?}", checked.unverified);
    assert_eq!(checked.invalid.len(), 1, "the forged share is caught in fast mode too");
}

#[tokio::test]
async fn shares_that_cannot_be_checked_come_back_unverified_never_dropped() {
    let params: MineParams = serde_json::from_value(json!({
        "key": "6b6579", "blob": "02".repeat(76), "difficulty": 1, "nonce_start": 0, "nonce_count": 10
    }))
    .expect("params");
    let verifier = Verifier::new(1);
    verifier.close();
    let shares: Vec<Share> = (0..3).map(|n| Share { nonce: n, hash: "00".repeat(32) }).collect();
    let checked = verifier.check(&params, &HashSet::new(), shares).await;
    assert!(checked.valid.is_empty() && checked.invalid.is_empty(), "not the worker's fault: {checked:?}");
    assert_eq!(checked.unverified.len(), 3, "every share is accounted for");
    assert!(checked.unverified.iter().all(|(_, why)| why.contains("shutting down")));
}

#[tokio::test]
async fn a_check_ends_at_its_time_limit_and_leaves_the_rest_unverified() {
    let params: MineParams = serde_json::from_value(json!({
        "key": "6c696d6974", "blob": "03".repeat(76), "difficulty": 1, "nonce_start": 0, "nonce_count": 100000
    }))
    .expect("params");
    // Difficulty 1: any hash meets the target, so each share costs a real hash to refute.
    let shares: Vec<Share> = (0..100_000).map(|n| Share { nonce: n, hash: "00".repeat(32) }).collect();
    let verifier = Verifier::new(1).with_deadline(Duration::from_secs(3));
    let checked = verifier.check(&params, &HashSet::new(), shares).await;
    assert!(!checked.unverified.is_empty(), "100,000 light-mode hashes do not fit in 3 s");
    assert!(checked.unverified.iter().all(|(_, why)| why.contains("time limit")));
    assert_eq!(
        checked.valid.len() + checked.invalid.len() + checked.unverified.len(),
        100_000,
        "all accounted for"
    );
}
