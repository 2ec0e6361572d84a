use super::*;
use faena_randomx::Material;
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
    // A live source's key: verified at once in light mode while the
    // dataset builds beside (it takes a while), then in fast mode.
    let verifier = Verifier::with_mode(2, Mode::Fast).with_deadline(Duration::from_secs(600));
    let key = work.key.clone();
    verifier.pin(verifier.next_pin(), vec![key.clone()]).await.expect("light material at once");
    let states = verifier.key_states();
    assert_eq!(states.len(), 1);
    assert_eq!((states[0].hashing, states[0].dataset), ("light", "building"), "{states:?}");
    let all = [shares.clone(), vec![forged]].concat();
    let checked = verifier.check(&params, &HashSet::new(), all.clone()).await;
    assert_eq!(checked.valid.len(), shares.len(), "light mode while the dataset builds: {:?}", checked.unverified);
    assert_eq!(checked.invalid.len(), 1);
    let started = Instant::now();
    while !verifier.fast_ready() {
        assert!(started.elapsed() < Duration::from_secs(600), "the dataset is built: {:?}", verifier.key_states());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(verifier.key_states()[0].hashing, "fast");
    let checked = verifier.check(&params, &HashSet::new(), all).await;
    assert_eq!(checked.valid.len(), shares.len(), "{:?}", checked.unverified);
    assert_eq!(checked.invalid.len(), 1, "the forged share is caught in fast mode too");
    // The key the node says comes next: its cache is ready before the
    // switch (the one dataset slot stays the current key's), and its dataset
    // is built once the current key is let go.
    let next = b"the next seed".to_vec();
    verifier.pin(verifier.next_pin(), vec![key.clone(), next.clone()]).await.expect("the next key's cache");
    let states = verifier.key_states();
    assert_eq!(
        states.iter().map(|s| (s.hashing, s.dataset)).collect::<Vec<_>>(),
        [("fast", "ready"), ("light", "off")]
    );
    verifier.pin(verifier.next_pin(), vec![next.clone()]).await.expect("the switch");
    let states = verifier.key_states();
    assert_eq!(states.iter().map(|s| (s.hashing, s.dataset)).collect::<Vec<_>>(), [("light", "building")]);
    // Keys no source uses are let go.
    verifier.pin(verifier.next_pin(), Vec::new()).await.expect("nothing to measure");
    assert!(verifier.key_states().is_empty() && !verifier.fast_ready());
}

#[tokio::test]
async fn a_client_churning_keys_never_evicts_a_sources_key() {
    let verifier = Verifier::new(1);
    let source = b"source key".to_vec();
    verifier.pin(verifier.next_pin(), vec![source.clone()]).await.expect("pinned");
    let pinned = verifier.keys.material(&source).expect("material");
    for n in 0..4u8 {
        let other = verifier.keys.material(&[b'k', n]).expect("a client's key, light");
        assert!(!Arc::ptr_eq(&other, &pinned));
    }
    let again = verifier.keys.material(&source).expect("material");
    assert!(Arc::ptr_eq(&again, &pinned), "the source's key stayed ready");
    assert_eq!(verifier.key_states()[0].dataset, "off", "light mode builds no dataset");
}

#[tokio::test]
async fn the_lowest_claimed_hash_is_checked_first() {
    let params: MineParams = serde_json::from_value(json!({
        "key": "6f72646572", "blob": "05".repeat(76), "difficulty": 1, "nonce_start": 0, "nonce_count": 100000
    }))
    .expect("params");
    let work = params.work().expect("work");
    let verifier = Verifier::new(1).with_deadline(Duration::from_millis(1500));
    // The key is ready before the clock starts: what is timed is the order
    // the shares are checked in, not building the key on a loaded machine.
    let material = verifier.keys.material(&work.key).expect("material");
    let real = Share { nonce: 99_999, hash: encode_hex(&material.vm().expect("vm").hash(&work.input(99_999))) };
    // Thousands of junk shares claiming high hashes, and a real one last in
    // the report claiming its (lower) hash: a time limit cuts the junk, not it.
    let mut shares: Vec<Share> = (0..20_000).map(|n| Share { nonce: n, hash: "fe".repeat(32) }).collect();
    shares.push(real.clone());
    let checked = verifier.check(&params, &HashSet::new(), shares).await;
    assert_eq!(checked.valid.as_slice(), std::slice::from_ref(&real), "checked before the cut-off");
    assert!(!checked.unverified.is_empty(), "the junk was cut");
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
    assert_eq!(checked.valid.len() + checked.invalid.len() + checked.unverified.len(), 100_000, "all accounted for");
}

#[test]
fn one_filter_refuses_nonces_outside_the_range_and_taken_ones() {
    use super::{NonceRefused, admit};
    let seen: HashSet<u32> = [105].into_iter().collect();
    assert_eq!(admit(100, 10, &seen, 100), Ok(()));
    assert_eq!(admit(100, 10, &seen, 109), Ok(()));
    assert_eq!(admit(100, 10, &seen, 110), Err(NonceRefused::Outside));
    assert_eq!(admit(100, 10, &seen, 99), Err(NonceRefused::Outside));
    assert_eq!(admit(100, 10, &seen, 105), Err(NonceRefused::Duplicate));
    // The whole top slice: no overflow at the end of the nonce space.
    assert_eq!(admit(0xff00_0000, 1 << 24, &HashSet::new(), u32::MAX), Ok(()));
    assert_eq!(admit(0xff00_0000, 1 << 24, &HashSet::new(), 0xfeff_ffff), Err(NonceRefused::Outside));
}
