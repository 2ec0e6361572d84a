#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use super::*;
use crate::RxError;

/// A fresh directory, removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Self {
        let base = if Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
        let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        Self(base.join(format!("faena-share-test-{tag}-{}-{n}", std::process::id())))
    }

    fn files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != ".lock")
            .collect();
        v.sort();
        v
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const SIZE: usize = 64 * 1024;

fn fill_with(byte: u8) -> impl FnOnce(NonNull<u8>) -> Result<(), RxError> {
    move |p| {
        // SAFETY: the writable mapping of at least SIZE bytes handed to a builder.
        unsafe { std::ptr::write_bytes(p.as_ptr(), byte, SIZE) };
        Ok(())
    }
}

fn read(region: &Region) -> &[u8] {
    // SAFETY: a live read-only mapping of at least SIZE bytes.
    unsafe { std::slice::from_raw_parts(region.ptr().as_ptr(), SIZE) }
}

#[test]
fn the_first_builds_the_next_maps_it_and_the_last_out_removes_it() {
    let dir = Dir::new("maps");
    let share = ShareDir::open(&dir.0).unwrap();
    let name = ShareDir::name_of(b"key one").unwrap();
    assert_eq!(name, "rx1-6b6579206f6e65");
    let a = share.attach_or_build(&name, SIZE, fill_with(7)).unwrap();
    assert!(a.built);
    let b = share.attach_or_build(&name, SIZE, |_| panic!("built twice")).unwrap();
    assert!(!b.built);
    assert!(read(&b).iter().all(|&x| x == 7));
    assert_ne!(a.ptr(), b.ptr(), "two mappings of one file");
    assert_eq!(dir.files(), vec![name.clone(), format!("{name}.users")]);
    drop(a);
    assert_eq!(dir.files(), vec![name.clone(), format!("{name}.users")], "still mapped by b");
    drop(b);
    assert_eq!(dir.files(), Vec::<String>::new(), "nobody maps it: removed");
}

#[test]
fn a_second_caller_waits_for_the_build_instead_of_building_again() {
    let dir = Dir::new("waits");
    let share = ShareDir::open(&dir.0).unwrap();
    let name = ShareDir::name_of(b"key two").unwrap();
    let builds = &AtomicUsize::new(0);
    let (share, name) = (&share, &name);
    let (started_tx, started_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        let first = s.spawn(move || {
            share
                .attach_or_build(name, SIZE, |p| {
                    builds.fetch_add(1, Ordering::SeqCst);
                    started_tx.send(()).unwrap();
                    go_rx.recv().unwrap();
                    fill_with(9)(p)
                })
                .unwrap()
        });
        started_rx.recv().unwrap();
        // The first is mid-build: the claim is held.
        let claim = open_rw(&share.file(name, ".building")).unwrap();
        assert!(!try_flock(&claim, libc::LOCK_EX).unwrap(), "the builder holds the claim");
        let second = s.spawn(move || {
            share
                .attach_or_build(name, SIZE, |p| {
                    builds.fetch_add(1, Ordering::SeqCst);
                    fill_with(1)(p)
                })
                .unwrap()
        });
        go_tx.send(()).unwrap();
        let (a, b) = (first.join().unwrap(), second.join().unwrap());
        assert_eq!(builds.load(Ordering::SeqCst), 1);
        assert!(read(&b).iter().all(|&x| x == 9));
        assert!(a.built != b.built);
    });
}

#[test]
fn a_failed_build_leaves_nothing_and_the_next_caller_builds() {
    let dir = Dir::new("fails");
    let share = ShareDir::open(&dir.0).unwrap();
    let name = ShareDir::name_of(b"key three").unwrap();
    let err = share.attach_or_build(&name, SIZE, |_| Err(RxError::Alloc("cache"))).unwrap_err();
    assert!(matches!(err, ShareError::Build(RxError::Alloc("cache"))), "{err}");
    assert_eq!(dir.files(), Vec::<String>::new());
    let a = share.attach_or_build(&name, SIZE, fill_with(3)).unwrap();
    assert!(a.built);
}

#[test]
fn what_dead_workers_left_is_swept_and_what_is_mapped_is_kept() {
    let dir = Dir::new("sweeps");
    let share = ShareDir::open(&dir.0).unwrap();
    let live = ShareDir::name_of(b"live").unwrap();
    let held = share.attach_or_build(&live, SIZE, fill_with(5)).unwrap();
    // A worker killed after building (its dataset mapped by nobody) and one
    // killed mid-build (a .tmp and an unheld claim).
    let (orphan, half) = (ShareDir::name_of(b"orphan").unwrap(), ShareDir::name_of(b"half").unwrap());
    std::fs::write(dir.0.join(&orphan), vec![0u8; SIZE]).unwrap();
    std::fs::write(dir.0.join(format!("{orphan}.users")), b"").unwrap();
    std::fs::write(dir.0.join(format!("{half}.tmp")), vec![0u8; 100]).unwrap();
    std::fs::write(dir.0.join(format!("{half}.building")), b"").unwrap();
    let next = ShareDir::name_of(b"next").unwrap();
    let n = share.attach_or_build(&next, SIZE, fill_with(6)).unwrap();
    let mut want = vec![live.clone(), format!("{live}.users"), next.clone(), format!("{next}.users")];
    want.sort();
    assert_eq!(dir.files(), want);
    assert!(read(&held).iter().all(|&x| x == 5));
    drop((held, n));
    assert_eq!(dir.files(), Vec::<String>::new());
}

#[test]
fn a_half_written_dataset_of_the_wrong_size_is_built_again() {
    let dir = Dir::new("size");
    let share = ShareDir::open(&dir.0).unwrap();
    let name = ShareDir::name_of(b"short").unwrap();
    std::fs::write(dir.0.join(&name), vec![1u8; 10]).unwrap();
    let a = share.attach_or_build(&name, SIZE, fill_with(4)).unwrap();
    assert!(a.built);
    assert!(read(&a).iter().all(|&x| x == 4));
}

#[test]
fn no_room_is_said_and_leaves_nothing() {
    let dir = Dir::new("room");
    let share = ShareDir::open(&dir.0).unwrap();
    let name = ShareDir::name_of(b"big").unwrap();
    let err = share.attach_or_build(&name, 1 << 50, |_| panic!("no room to build in")).unwrap_err();
    assert!(matches!(err, ShareError::NoRoom { .. }), "{err}");
    assert_eq!(dir.files(), Vec::<String>::new());
}

#[test]
fn long_keys_are_not_shared() {
    assert!(matches!(ShareDir::name_of(&[0u8; 101]), Err(ShareError::KeyTooLong { len: 101 })));
    assert!(ShareDir::name_of(&[0u8; 100]).is_ok());
}

#[test]
fn a_directory_others_may_write_to_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = Dir::new("open");
    std::fs::create_dir_all(&dir.0).unwrap();
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let err = ShareDir::open(&dir.0).unwrap_err();
    assert!(matches!(err, ShareError::NotPrivate { mode: 0o1777, .. }), "{err}");
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o700)).unwrap();
    assert!(ShareDir::open(&dir.0).is_ok());
}
