//! One dataset per machine: workers on the same machine map one read-only
//! copy of a key's 2 GiB dataset from a shared directory (a tmpfs such as
//! `/dev/shm`, or hugetlbfs) instead of each building its own. The first
//! worker to need a key builds it there; the others wait for it and map it.
//!
//! The directory holds, per key `rx1-<hex key>`:
//! - `NAME`: the finished dataset, only ever complete (built as `NAME.tmp`,
//!   renamed when done);
//! - `NAME.users`: every process that maps `NAME` holds a shared `flock`
//!   on it; whoever can take it exclusively knows nobody uses `NAME`;
//! - `NAME.building`: the builder holds an exclusive `flock` on it while it
//!   builds, and the others wait on it.
//!
//! and one `.lock`, held (exclusively, briefly) around every look at the
//! directory: attaching, claiming a build, finishing one, detaching and
//! sweeping. Locks die with their process, so a worker killed mid-build or
//! while mapping leaves nothing that blocks the others: its half-built
//! `.tmp` is built again, and a dataset nobody maps is removed by the next
//! worker that attaches (or by the last one to detach).
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

/// The longest key shared by name (hex in a file name); longer keys are
/// built privately. RandomX keys are at most 60 bytes in practice.
const MAX_KEY: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    #[error("{what} in {dir}: {error}")]
    Io { what: &'static str, dir: PathBuf, error: io::Error },
    #[error("no room for {need_mib} MiB in {dir}")]
    NoRoom { dir: PathBuf, need_mib: u64 },
    #[error(
        "{dir} is not private to this user (owner uid {owner}, mode {mode:o}): another user could plant a dataset in it"
    )]
    NotPrivate { dir: PathBuf, owner: u32, mode: u32 },
    #[error("a {len}-byte key is not shared (at most {MAX_KEY} bytes)")]
    KeyTooLong { len: usize },
    #[error(transparent)]
    Build(#[from] crate::RxError),
}

/// A directory where the workers of one machine share datasets.
#[derive(Debug, Clone)]
pub struct ShareDir {
    dir: PathBuf,
}

/// A shared dataset mapped into this process (read-only once built). While
/// it lives this process counts as a user; dropping it unmaps it and, if no
/// process maps it any more, removes it.
#[derive(Debug)]
pub(crate) struct Region {
    ptr: NonNull<u8>,
    len: usize,
    dir: ShareDir,
    name: String,
    /// The shared lock on `NAME.users`, held while mapped.
    users: Option<File>,
    /// Whether this process built it (false: mapped another's).
    pub built: bool,
}

// SAFETY: the mapping is read-only once a `Region` is handed out, and its
// files are only used under flock.
unsafe impl Send for Region {}
unsafe impl Sync for Region {}

fn flock(file: &File, op: libc::c_int) -> io::Result<()> {
    loop {
        // SAFETY: flock on a descriptor this File owns.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Takes `op | LOCK_NB`: Ok(false) when someone else holds it.
fn try_flock(file: &File, op: libc::c_int) -> io::Result<bool> {
    match flock(file, op | libc::LOCK_NB) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
        Err(e) => Err(e),
    }
}

fn open_rw(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(path)
}

fn remove(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::debug!(path = %path.display(), error = %e, "could not remove a shared RandomX file");
    }
}

/// Maps `len` bytes of `file` shared.
fn map(file: &File, len: usize, prot: libc::c_int, flags: libc::c_int) -> io::Result<NonNull<u8>> {
    // SAFETY: a fresh mapping of a file this process opened; nothing else
    // in this process refers to the address range returned.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED | flags, file.as_raw_fd(), 0) };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned NULL"))
}

fn unmap(ptr: NonNull<u8>, len: usize) {
    // SAFETY: a mapping made by `map` with this length, unmapped once.
    unsafe { libc::munmap(ptr.as_ptr().cast::<c_void>(), len) };
}

impl ShareDir {
    /// Uses (and makes, private to this user) `dir`: refused when it is
    /// someone else's or others may write to it, since whatever file is
    /// there under a key's name is what this worker hashes with.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, ShareError> {
        use std::os::unix::fs::MetadataExt;
        let share = Self { dir: dir.into() };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&share.dir)
            .map_err(share.io("making the directory"))?;
        let meta = std::fs::metadata(&share.dir).map_err(share.io("reading the directory"))?;
        // SAFETY: a query without arguments.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me || meta.mode() & 0o022 != 0 {
            return Err(ShareError::NotPrivate { dir: share.dir, owner: meta.uid(), mode: meta.mode() & 0o7777 });
        }
        share.lock().map_err(share.io("locking the directory"))?;
        Ok(share)
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The file name a key's dataset is shared under.
    pub fn name_of(key: &[u8]) -> Result<String, ShareError> {
        if key.len() > MAX_KEY {
            return Err(ShareError::KeyTooLong { len: key.len() });
        }
        Ok(format!("rx1-{}", hex::encode(key)))
    }

    fn file(&self, name: &str, suffix: &str) -> PathBuf {
        self.dir.join(format!("{name}{suffix}"))
    }

    fn io(&self, what: &'static str) -> impl FnOnce(io::Error) -> ShareError + '_ {
        move |error| ShareError::Io { what, dir: self.dir.clone(), error }
    }

    /// The directory's lock, held until the returned file is dropped.
    fn lock(&self) -> io::Result<File> {
        let f = open_rw(&self.dir.join(".lock"))?;
        flock(&f, libc::LOCK_EX)?;
        Ok(f)
    }

    /// Maps `name`'s dataset of `size` bytes, built by whoever came first;
    /// if nobody has, builds it here: `build` fills the (zeroed, writable)
    /// memory it is given. Blocks while another process builds it.
    pub(crate) fn attach_or_build(
        &self,
        name: &str,
        size: usize,
        build: impl FnOnce(NonNull<u8>) -> Result<(), crate::RxError>,
    ) -> Result<Region, ShareError> {
        loop {
            let guard = self.lock().map_err(self.io("locking the directory"))?;
            self.sweep(name);
            if let Some(region) = self.attach(name, size)? {
                return Ok(region);
            }
            let building = open_rw(&self.file(name, ".building")).map_err(self.io("opening a build lock"))?;
            if try_flock(&building, libc::LOCK_EX).map_err(self.io("claiming a build"))? {
                drop(guard);
                return self.build(name, size, building, build);
            }
            // Another process builds it: wait for it to finish (or die), then look again.
            drop(guard);
            flock(&building, libc::LOCK_EX).map_err(self.io("waiting for another worker's build"))?;
        }
    }

    /// Under the directory lock: maps `name` if it is there.
    fn attach(&self, name: &str, size: usize) -> Result<Option<Region>, ShareError> {
        let path = self.file(name, "");
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io("opening a shared dataset")(e)),
        };
        let len = file.metadata().map_err(self.io("reading a shared dataset's size"))?.len();
        if len < size as u64 {
            // Not one of ours (datasets appear only whole): build it again.
            tracing::warn!(path = %path.display(), len, "a shared RandomX dataset has the wrong size; building it again");
            remove(&path);
            return Ok(None);
        }
        let users = open_rw(&self.file(name, ".users")).map_err(self.io("opening a users lock"))?;
        flock(&users, libc::LOCK_SH).map_err(self.io("joining a dataset's users"))?;
        let len = len as usize;
        let ptr = map(&file, len, libc::PROT_READ, libc::MAP_POPULATE).map_err(self.io("mapping a shared dataset"))?;
        Ok(Some(Region { ptr, len, dir: self.clone(), name: name.to_owned(), users: Some(users), built: false }))
    }

    /// Builds `name` as `NAME.tmp` and renames it into place; `building`
    /// holds the build claim.
    fn build(
        &self,
        name: &str,
        size: usize,
        building: File,
        fill: impl FnOnce(NonNull<u8>) -> Result<(), crate::RxError>,
    ) -> Result<Region, ShareError> {
        let tmp = self.file(name, ".tmp");
        let done = || {
            remove(&tmp);
            remove(&self.file(name, ".building"));
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(self.io("creating a shared dataset"))?;
        // Whole pages of the filesystem's own size (2 MiB or 1 GiB on hugetlbfs).
        let page = statvfs(&self.dir).map(|s| s.f_bsize as usize).unwrap_or(4096).max(4096);
        let len = size.next_multiple_of(page);
        // Reserve every page now: a tmpfs that fills up later would kill the
        // builder with SIGBUS in the middle of the build.
        // SAFETY: fallocate on a descriptor this File owns.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len as libc::off_t) };
        if rc != 0 {
            done();
            let error = io::Error::from_raw_os_error(rc);
            return Err(match rc {
                libc::ENOSPC | libc::EFBIG | libc::ENOMEM => {
                    ShareError::NoRoom { dir: self.dir.clone(), need_mib: (len >> 20) as u64 }
                }
                _ => self.io("reserving a shared dataset")(error),
            });
        }
        let ptr = match map(&file, len, libc::PROT_READ | libc::PROT_WRITE, 0) {
            Ok(p) => p,
            Err(e) => {
                done();
                return Err(self.io("mapping a shared dataset")(e));
            }
        };
        // Transparent huge pages where the tmpfs allows them (advisory).
        // SAFETY: advice on the mapping just made.
        unsafe { libc::madvise(ptr.as_ptr().cast::<c_void>(), len, libc::MADV_HUGEPAGE) };
        if let Err(e) = fill(ptr) {
            unmap(ptr, len);
            done();
            return Err(e.into());
        }
        // Read-only from now on, for this process as for every other.
        // SAFETY: the mapping just made; nothing writes to it any more.
        unsafe { libc::mprotect(ptr.as_ptr().cast::<c_void>(), len, libc::PROT_READ) };
        let finish = || -> io::Result<File> {
            let _guard = self.lock()?;
            let users = open_rw(&self.file(name, ".users"))?;
            flock(&users, libc::LOCK_SH)?;
            std::fs::rename(&tmp, self.file(name, ""))?;
            remove(&self.file(name, ".building"));
            drop(building);
            Ok(users)
        };
        match finish() {
            Ok(users) => {
                Ok(Region { ptr, len, dir: self.clone(), name: name.to_owned(), users: Some(users), built: true })
            }
            Err(e) => {
                unmap(ptr, len);
                done();
                Err(self.io("publishing a shared dataset")(e))
            }
        }
    }

    /// Under the directory lock: removes every dataset no process maps
    /// (except `keep`, about to be mapped) and every build whose builder died.
    fn sweep(&self, keep: &str) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(file_name) = file_name.to_str() else { continue };
            if let Some(name) = file_name.strip_suffix(".tmp") {
                if let Ok(b) = open_rw(&self.file(name, ".building"))
                    && try_flock(&b, libc::LOCK_EX).unwrap_or(false)
                {
                    remove(&self.file(name, ".tmp"));
                    remove(&self.file(name, ".building"));
                }
            } else if file_name.starts_with("rx1-") && !file_name.contains('.') && file_name != keep {
                self.remove_if_unused(file_name);
            }
        }
    }

    /// Under the directory lock: removes `name` if no process maps it.
    fn remove_if_unused(&self, name: &str) -> bool {
        let Ok(users) = open_rw(&self.file(name, ".users")) else { return false };
        if !try_flock(&users, libc::LOCK_EX).unwrap_or(false) {
            return false;
        }
        remove(&self.file(name, ""));
        remove(&self.file(name, ".users"));
        true
    }
}

fn statvfs(dir: &Path) -> io::Result<libc::statvfs> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let mut out = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: a valid C string and an out-parameter of the right type.
    if unsafe { libc::statvfs(c.as_ptr(), out.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled `out`.
    Ok(unsafe { out.assume_init() })
}

impl Region {
    pub(crate) fn ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    /// Whether the kernel backs this mapping with huge pages (hugetlbfs, or
    /// a tmpfs that gives transparent huge pages): random reads over 2 GiB
    /// are much slower on 4 KiB pages. Read from `/proc/self/smaps`.
    pub(crate) fn huge_pages(&self) -> bool {
        let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else { return false };
        let start = format!("{:x}-", self.ptr.as_ptr() as usize);
        let Some(at) = smaps.lines().position(|l| l.starts_with(&start)) else { return false };
        smaps.lines().skip(at + 1).take_while(|l| l.contains(':') && !l.contains('-')).any(|l| {
            let mut parts = l.split_whitespace();
            let (field, kb) = (parts.next().unwrap_or_default(), parts.next().and_then(|v| v.parse::<u64>().ok()));
            match (field, kb) {
                ("KernelPageSize:", Some(kb)) => kb > 4,
                ("ShmemPmdMapped:" | "FilePmdMapped:", Some(kb)) => kb > 0,
                _ => false,
            }
        })
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        unmap(self.ptr, self.len);
        drop(self.users.take());
        match self.dir.lock() {
            Ok(_guard) => {
                if self.dir.remove_if_unused(&self.name) {
                    tracing::debug!(name = %self.name, "removed a shared RandomX dataset nobody maps any more");
                }
            }
            Err(e) => tracing::debug!(error = %e, "could not lock the RandomX share directory to clean up"),
        }
    }
}

#[cfg(test)]
mod tests;
