//! The store's one writer: a thread that owns the backend's write
//! connection and commits what it is given in groups.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use faena_common::retry::Policy;

use super::{Callback, Cmd, CommitFailed, MAX_GROUP, StoreError, StoreOp};

/// What a backend does with a group: applies `ops` in order and `prunes`
/// steps of retention in one transaction, and commits. On an error nothing
/// of the group is stored (it is given again, with what arrived since).
pub(crate) trait Apply: Send + 'static {
    /// `stamps`: the row ids and times of the group's new jobs, in order,
    /// where the store stamped them (a store of shards); else the backend
    /// numbers them.
    fn apply(
        &mut self,
        ops: &[StoreOp],
        stamps: &[Stamp],
        prunes: usize,
    ) -> Result<Vec<Result<usize, StoreError>>, StoreError>;
}

type PruneReply = tokio::sync::oneshot::Sender<Result<usize, StoreError>>;

/// What a store of shards gives a new job as it is queued: its row id and
/// its `created_at`, both in the order jobs were queued over every shard
/// (`created_at` never below the job's before it, as on one file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub row: i64,
    pub created: i64,
}

/// What arrived since the last commit.
#[derive(Default)]
struct Group {
    ops: Vec<StoreOp>,
    /// The stamps of the new jobs of `ops`, in order.
    stamps: Vec<Stamp>,
    /// Messages taken into the group (each a change, a batch, a callback).
    messages: u64,
    callbacks: Vec<Callback>,
    prunes: Vec<PruneReply>,
}

impl Group {
    fn take(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Op(op) => self.ops.push(op),
            Cmd::AfterCommit(cb) => self.callbacks.push(cb),
            Cmd::Prune(reply) => self.prunes.push(reply),
            Cmd::Many(cmds) => cmds.into_iter().for_each(|c| self.take(c)),
            Cmd::Row(stamp) => self.stamps.push(stamp),
        }
    }

    fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.callbacks.is_empty() && self.prunes.is_empty()
    }
}

/// Commits what it is given, in order, in groups. A group that fails (disk
/// full, I/O error) is kept and tried again, with whatever arrived since,
/// until it commits (waits from [`Policy::DELIVERY`]: 50 ms growing to
/// 2 s): nothing queued is dropped and no callback runs before the changes
/// ahead of it are stored. The store reads as unhealthy meanwhile, so the
/// master takes no new jobs and hands out no work.
///
/// `done` hears how many messages each group that committed (or was
/// answered) held: a store of shards counts them (`shards::Joiner`).
pub(super) fn run(mut backend: impl Apply, rx: mpsc::Receiver<Cmd>, healthy: Arc<AtomicBool>, done: impl Fn(u64)) {
    let mut group = Group::default();
    let mut backoff = Policy::DELIVERY.start();
    let mut failed_at: Option<Instant> = None;
    // The epoch the last group written was refused for, until one commits.
    let mut refused: Option<i64> = None;
    loop {
        if group.is_empty() {
            match rx.recv() {
                Ok(cmd) => {
                    group.take(cmd);
                    group.messages += 1;
                }
                Err(_) => return,
            }
        }
        let mut closed = false;
        while group.ops.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(cmd) => {
                    group.take(cmd);
                    group.messages += 1;
                }
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        if group.ops.is_empty() && group.prunes.is_empty() {
            // Callbacks only (an event, a reply after earlier writes):
            // every change ahead of them is stored, the writer being one
            // chain, so they are answered without the backend, where an
            // empty transaction still cost PostgreSQL a transaction id and
            // a WAL flush. After a refusal they hear it, as they would
            // have from the backend.
            let answer = refused.map(|epoch| CommitFailed(Arc::new(StoreError::Fenced { epoch })));
            for cb in group.callbacks.drain(..) {
                cb(answer.clone().map_or(Ok(()), Err));
            }
            done(std::mem::take(&mut group.messages));
            continue;
        }
        match backend.apply(&group.ops, &group.stamps, group.prunes.len()) {
            Ok(pruned) => {
                refused = None;
                if let Some(since) = failed_at.take() {
                    healthy.store(true, Ordering::Relaxed);
                    tracing::info!(
                        after_ms = since.elapsed().as_millis() as u64,
                        changes = group.ops.len(),
                        "the store commits again; the master resumes"
                    );
                }
                backoff.reset();
                group.ops.clear();
                group.stamps.clear();
                for cb in group.callbacks.drain(..) {
                    cb(Ok(()));
                }
                for (reply, n) in group.prunes.drain(..).zip(pruned) {
                    let _ = reply.send(n);
                }
                done(std::mem::take(&mut group.messages));
            }
            Err(StoreError::Fenced { epoch }) => {
                // Another master leads: what this one decided is not the
                // store's any more. Refused whole, told to whoever waits;
                // never retried.
                refused = Some(epoch);
                tracing::warn!(
                    epoch,
                    changes = group.ops.len(),
                    "the store refused this master's writes: another master leads (newer epoch)"
                );
                group.ops.clear();
                group.stamps.clear();
                let failed = CommitFailed(Arc::new(StoreError::Fenced { epoch }));
                for cb in group.callbacks.drain(..) {
                    cb(Err(failed.clone()));
                }
                for reply in group.prunes.drain(..) {
                    let _ = reply.send(Err(StoreError::Fenced { epoch }));
                }
                done(std::mem::take(&mut group.messages));
                if closed {
                    return;
                }
            }
            Err(e) if closed => {
                tracing::error!(error = %e, changes = group.ops.len(), "the store could not commit before the master stopped; these changes are lost and their jobs run again after a restart");
                let failed = CommitFailed(Arc::new(e));
                for cb in group.callbacks.drain(..) {
                    cb(Err(failed.clone()));
                }
                return;
            }
            Err(e) => {
                if failed_at.is_none() {
                    failed_at = Some(Instant::now());
                    healthy.store(false, Ordering::Relaxed);
                    tracing::error!(error = %e, changes = group.ops.len(), "store write failed; the master takes no new jobs and hands out no work until it commits again (retrying)");
                }
                std::thread::sleep(backoff.wait());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use faena_proto::ids::JobId;
    use faena_proto::jobs::{JobState, Priority};

    /// Records the size of each group it is given, and answers each as
    /// told, in turn (committed once told nothing).
    struct Groups {
        sizes: Arc<std::sync::Mutex<Vec<usize>>>,
        answers: std::collections::VecDeque<Result<(), StoreError>>,
    }

    impl Groups {
        fn new(sizes: &Arc<std::sync::Mutex<Vec<usize>>>) -> Self {
            Self { sizes: sizes.clone(), answers: Default::default() }
        }
    }

    impl Apply for Groups {
        fn apply(
            &mut self,
            ops: &[StoreOp],
            _stamps: &[Stamp],
            prunes: usize,
        ) -> Result<Vec<Result<usize, StoreError>>, StoreError> {
            self.sizes.lock().expect("lock").push(ops.len());
            self.answers.pop_front().unwrap_or(Ok(())).map(|()| (0..prunes).map(|_| Ok(0)).collect())
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
        let (tx, rx) = mpsc::channel();
        let mut batch = crate::Batch::default();
        for _ in 0..MAX_GROUP + 5 {
            batch.write(op());
        }
        let (done_tx, done_rx) = mpsc::channel();
        batch.after_commit(move |r| done_tx.send(r.is_ok()).expect("send"));
        tx.send(Cmd::Many(std::mem::take(&mut batch.cmds))).expect("send");
        drop(tx);
        run(Groups::new(&sizes), rx, Arc::new(AtomicBool::new(true)), |_| {});
        assert_eq!(done_rx.recv(), Ok(true));
        assert_eq!(*sizes.lock().expect("lock"), vec![MAX_GROUP + 5]);
    }

    /// Callbacks with no change ahead of them in their group are answered
    /// without the backend: Ok, or the refusal of the last group written
    /// until a group commits again.
    #[test]
    fn a_group_of_callbacks_only_skips_the_backend_and_repeats_a_refusal() {
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let answers = [Ok(()), Err(StoreError::Fenced { epoch: 7 }), Ok(())].into();
        let backend = Groups { answers, ..Groups::new(&sizes) };
        let (tx, rx) = mpsc::channel();
        let writer = std::thread::spawn(move || run(backend, rx, Arc::new(AtomicBool::new(true)), |_| {}));
        let (done_tx, done_rx) = mpsc::channel();
        let step = |write: bool| {
            let mut batch = crate::Batch::default();
            if write {
                batch.write(op());
            }
            let done_tx = done_tx.clone();
            batch.after_commit(move |r| done_tx.send(r.err().map(|e| e.0.to_string())).expect("send"));
            tx.send(Cmd::Many(std::mem::take(&mut batch.cmds))).expect("send");
            let answer = done_rx.recv().expect("answered");
            (answer, sizes.lock().expect("lock").len())
        };
        assert_eq!(step(false), (None, 0), "nothing written: the backend is not asked");
        assert_eq!(step(true), (None, 1));
        assert_eq!(step(false), (None, 1));
        let (refusal, groups) = step(true);
        assert!(refusal.as_deref().is_some_and(|e| e.contains("epoch than this master's 7")), "{refusal:?}");
        assert_eq!(groups, 2);
        let (repeated, groups) = step(false);
        assert_eq!((repeated, groups), (refusal, 2), "callbacks after a refusal hear it");
        assert_eq!(step(true), (None, 3));
        assert_eq!(step(false), (None, 3), "a commit ends the refusal");
        drop(tx);
        writer.join().expect("the writer ends");
    }

    /// A batch that never reaches the writer tells whoever waits on it.
    #[test]
    fn a_batch_dropped_unsent_fails_its_callbacks() {
        let (done_tx, done_rx) = mpsc::channel();
        let mut batch = crate::Batch::default();
        batch.write(op());
        batch.after_commit(move |r| done_tx.send(r.is_err()).expect("send"));
        drop(batch);
        assert_eq!(done_rx.recv(), Ok(true));
    }
}
