//! The store's one writer: a thread that owns the backend's write
//! connection and commits what it is given in groups. The SQLite backend
//! commits each group before it takes the next ([`run`]); the PostgreSQL
//! one sends the next while the last commits (`pg/write/pipeline.rs`).
//! Both keep what a group is ([`Group`]), how its outcome is told
//! ([`committed`], [`refused`], [`lost`]) and how a failing store is
//! retried ([`Health`]) here.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use faena_common::retry::{Backoff, Policy};
use tokio::sync::mpsc::{UnboundedReceiver, error::TryRecvError};

use super::{Callback, Cmd, CommitFailed, MAX_GROUP, StoreError, StoreOp};

/// What a backend does with a group: applies `ops` in order and `prunes`
/// steps of retention in one transaction, and commits. On an error nothing
/// of the group is stored (it is given again, with what arrived since).
pub(crate) trait Apply: Send + 'static {
    fn apply(&mut self, ops: &[StoreOp], prunes: usize) -> Result<Vec<Result<usize, StoreError>>, StoreError>;
}

pub(crate) type PruneReply = tokio::sync::oneshot::Sender<Result<usize, StoreError>>;

/// What one transaction commits: changes, the callbacks waiting on them,
/// and steps of retention.
#[derive(Default)]
pub(crate) struct Group {
    pub ops: Vec<StoreOp>,
    pub callbacks: Vec<Callback>,
    pub prunes: Vec<PruneReply>,
}

impl Group {
    pub fn take(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Op(op) => self.ops.push(op),
            Cmd::AfterCommit(cb) => self.callbacks.push(cb),
            Cmd::Prune(reply) => self.prunes.push(reply),
            Cmd::Many(cmds) => cmds.into_iter().for_each(|c| self.take(c)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.callbacks.is_empty() && self.prunes.is_empty()
    }

    /// `later`'s changes after this group's, as one group.
    pub fn append(&mut self, mut later: Group) {
        self.ops.append(&mut later.ops);
        self.callbacks.append(&mut later.callbacks);
        self.prunes.append(&mut later.prunes);
    }

    /// Takes what is queued without waiting, up to [`MAX_GROUP`] changes;
    /// true when the channel is closed (every sender gone).
    pub fn gather(&mut self, rx: &mut UnboundedReceiver<Cmd>) -> bool {
        while self.ops.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(cmd) => self.take(cmd),
                Err(TryRecvError::Empty) => return false,
                Err(TryRecvError::Disconnected) => return true,
            }
        }
        false
    }
}

/// The group committed: its callbacks run, its prunes are answered.
pub(crate) fn committed(group: Group, pruned: Vec<Result<usize, StoreError>>) {
    for cb in group.callbacks {
        cb(Ok(()));
    }
    for (reply, n) in group.prunes.into_iter().zip(pruned) {
        let _ = reply.send(n);
    }
}

/// Another master leads: what this one decided is not the store's any
/// more. Refused whole, told to whoever waits; never retried.
pub(crate) fn refused(group: Group, epoch: i64) {
    tracing::warn!(
        epoch,
        changes = group.ops.len(),
        "the store refused this master's writes: another master leads (newer epoch)"
    );
    let failed = CommitFailed(Arc::new(StoreError::Fenced { epoch }));
    for cb in group.callbacks {
        cb(Err(failed.clone()));
    }
    for reply in group.prunes {
        let _ = reply.send(Err(StoreError::Fenced { epoch }));
    }
}

/// The master stops and the group could not commit: told, and gone.
pub(crate) fn lost(group: Group, e: StoreError) {
    tracing::error!(error = %e, changes = group.ops.len(), "the store could not commit before the master stopped; these changes are lost and their jobs run again after a restart");
    let failed = CommitFailed(Arc::new(e));
    for cb in group.callbacks {
        cb(Err(failed.clone()));
    }
}

/// Whether the store commits, and how long to wait before trying again
/// when it does not (from [`Policy::DELIVERY`]: 50 ms growing to 2 s).
/// The store reads as unhealthy while it fails, so the master takes no
/// new jobs and hands out no work.
pub(crate) struct Health {
    healthy: Arc<AtomicBool>,
    failed_at: Option<Instant>,
    backoff: Backoff,
}

impl Health {
    pub fn new(healthy: Arc<AtomicBool>) -> Self {
        Self { healthy, failed_at: None, backoff: Policy::DELIVERY.start() }
    }

    /// A group of `changes` committed.
    pub fn committed(&mut self, changes: usize) {
        if let Some(since) = self.failed_at.take() {
            self.healthy.store(true, Ordering::Relaxed);
            tracing::info!(
                after_ms = since.elapsed().as_millis() as u64,
                changes,
                "the store commits again; the master resumes"
            );
        }
        self.backoff.reset();
    }

    /// A group of `changes` failed with `e`: how long to wait before the
    /// next try.
    pub fn failed(&mut self, e: &StoreError, changes: usize) -> Duration {
        if self.failed_at.is_none() {
            self.failed_at = Some(Instant::now());
            self.healthy.store(false, Ordering::Relaxed);
            tracing::error!(error = %e, changes, "store write failed; the master takes no new jobs and hands out no work until it commits again (retrying)");
        }
        self.backoff.wait()
    }
}

/// Commits what it is given, in order, in groups. A group that fails (disk
/// full, I/O error) is kept and tried again, with whatever arrived since,
/// until it commits: nothing queued is dropped and no callback runs
/// before the changes ahead of it are stored.
pub(super) fn run(mut backend: impl Apply, mut rx: UnboundedReceiver<Cmd>, healthy: Arc<AtomicBool>) {
    let mut group = Group::default();
    let mut health = Health::new(healthy);
    loop {
        if group.is_empty() {
            match rx.blocking_recv() {
                Some(cmd) => group.take(cmd),
                None => return,
            }
        }
        let closed = group.gather(&mut rx);
        match backend.apply(&group.ops, group.prunes.len()) {
            Ok(pruned) => {
                health.committed(group.ops.len());
                committed(std::mem::take(&mut group), pruned);
            }
            Err(StoreError::Fenced { epoch }) => {
                refused(std::mem::take(&mut group), epoch);
                if closed {
                    return;
                }
            }
            Err(e) if closed => return lost(group, e),
            Err(e) => std::thread::sleep(health.failed(&e, group.ops.len())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use faena_proto::ids::JobId;
    use faena_proto::jobs::{JobState, Priority};

    /// Counts the groups it is given and their sizes.
    struct Groups(Arc<std::sync::Mutex<Vec<usize>>>);

    impl Apply for Groups {
        fn apply(&mut self, ops: &[StoreOp], prunes: usize) -> Result<Vec<Result<usize, StoreError>>, StoreError> {
            self.0.lock().expect("lock").push(ops.len());
            Ok((0..prunes).map(|_| Ok(0)).collect())
        }
    }

    fn op() -> StoreOp {
        let (priority, was, state) = (Priority::High, Priority::Normal, JobState::Queued);
        StoreOp::Reprioritised { id: JobId::new(), priority, was, state, attempts: 0, at_ms: 0 }
    }

    /// A batch is one group however large it is (ops sent one by one are
    /// cut at `MAX_GROUP`), and its callbacks run once it committed.
    #[test]
    fn a_batch_is_taken_whole_into_one_group() {
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut batch = crate::Batch::default();
        for _ in 0..MAX_GROUP + 5 {
            batch.write(op());
        }
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        batch.after_commit(move |r| done_tx.send(r.is_ok()).expect("send"));
        tx.send(Cmd::Many(std::mem::take(&mut batch.cmds))).expect("send");
        drop(tx);
        run(Groups(sizes.clone()), rx, Arc::new(AtomicBool::new(true)));
        assert_eq!(done_rx.recv(), Ok(true));
        assert_eq!(*sizes.lock().expect("lock"), vec![MAX_GROUP + 5]);
    }

    /// A batch that never reaches the writer tells whoever waits on it.
    #[test]
    fn a_batch_dropped_unsent_fails_its_callbacks() {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let mut batch = crate::Batch::default();
        batch.write(op());
        batch.after_commit(move |r| done_tx.send(r.is_err()).expect("send"));
        drop(batch);
        assert_eq!(done_rx.recv(), Ok(true));
    }
}
