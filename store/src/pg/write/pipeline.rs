//! The PostgreSQL writer's loop. Each group is one transaction chained to
//! the group before it (it commits only if that one did), so the next
//! group goes out on the same connection as soon as the last one's
//! statements have run, while it commits: the server goes from one group
//! to the next without waiting for the writer to hear back and send
//! again. At most two groups are out at once; a group with steps of
//! retention goes alone.
//!
//! When a group fails, the one behind it fails too (its link no longer
//! follows). Once connected again, the writer reads the chain to learn
//! which of them committed — a lost connection may have taken a commit's
//! answer, not the commit — tells those, and sends the rest again, with
//! what arrived since, as one group. Callbacks run in the order the
//! changes were queued, and only once they are stored, as on SQLite.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

use super::{Pruned, Sent, Writer};
use crate::writer::{Group, Health, committed, lost, refused};
use crate::{Cmd, MAX_GROUP, StoreError};

/// Runs the writer on `w`'s connection until every sender is gone and
/// what they queued is committed (or could not be).
pub(crate) fn run(mut w: Writer, rx: UnboundedReceiver<Cmd>, healthy: Arc<AtomicBool>) {
    let Some(rt) = w.rt.take() else { return };
    let pipeline = Pipeline {
        w,
        rx,
        health: Health::new(healthy),
        pending: Group::default(),
        out: VecDeque::new(),
        unsure: Vec::new(),
        retry_at: None,
        closed: false,
    };
    rt.block_on(pipeline.drive());
}

/// A group sent and not yet answered.
struct Out {
    group: Group,
    sent: Sent,
}

/// What the oldest group out did.
enum Event {
    /// Its statements ran: the server is committing it.
    Ran,
    Done(Result<Pruned, StoreError>),
}

struct Pipeline {
    w: Writer,
    rx: UnboundedReceiver<Cmd>,
    health: Health,
    /// Gathered, not yet sent.
    pending: Group,
    /// Sent, oldest first.
    out: VecDeque<Out>,
    /// Failed, whether they committed unknown until connected again.
    unsure: Vec<Out>,
    /// No group is sent before then (the store is failing).
    retry_at: Option<Instant>,
    /// Every sender is gone: what is left is committed, then the loop ends.
    closed: bool,
}

impl Pipeline {
    async fn drive(mut self) {
        loop {
            if self.may_send()
                && let Err(e) = self.send().await
            {
                if self.closed {
                    return self.give_up(e);
                }
                self.failed(&e);
            }
            if self.closed && self.out.is_empty() && self.pending.is_empty() && self.unsure.is_empty() {
                return;
            }
            let retry_at = self.retry_at;
            tokio::select! {
                biased;
                event = front_event(&mut self.out) => self.on_event(event),
                cmd = self.rx.recv(), if !self.closed && self.pending.ops.len() < MAX_GROUP => match cmd {
                    Some(cmd) => {
                        self.pending.take(cmd);
                        self.closed = self.pending.gather(&mut self.rx);
                    }
                    None => self.closed = true,
                },
                () = sleep_until(retry_at) => self.retry_at = None,
            }
        }
    }

    /// Whether to send now: something is waiting, no failure is waited
    /// out, and the server would otherwise be idle soon (nothing out, or
    /// one group committing, neither with steps of retention); or groups
    /// of unknown outcome wait for the connection to be made again.
    fn may_send(&self) -> bool {
        if self.retry_at.is_some() || (!self.out.is_empty() && !self.unsure.is_empty()) {
            return false;
        }
        if !self.unsure.is_empty() {
            return true;
        }
        if self.pending.is_empty() {
            return false;
        }
        match self.out.front() {
            None => true,
            Some(front) => {
                self.out.len() == 1
                    && front.sent.ran.is_none()
                    && front.group.prunes.is_empty()
                    && self.pending.prunes.is_empty()
            }
        }
    }

    /// Connects if need be (settling what a lost connection left unsure),
    /// then sends what is pending.
    async fn send(&mut self) -> Result<(), StoreError> {
        if let Some(link) = self.w.connect().await? {
            self.settle(link);
        }
        if self.pending.is_empty() {
            return Ok(());
        }
        let group = std::mem::take(&mut self.pending);
        match self.w.send(&group.ops, group.prunes.len()) {
            Ok(sent) => {
                self.out.push_back(Out { group, sent });
                Ok(())
            }
            Err(e) => {
                self.pending = group;
                Err(e)
            }
        }
    }

    /// The store's chain ends on `link`: the unsure groups up to the one
    /// that set it committed; the rest go again, before what is pending.
    fn settle(&mut self, link: i64) {
        let unsure = std::mem::take(&mut self.unsure);
        let last = unsure.iter().rposition(|u| u.sent.link == link);
        let mut again = Group::default();
        for (i, u) in unsure.into_iter().enumerate() {
            if last.is_some_and(|last| i <= last) {
                // Committed; how many each step of retention took is not
                // known: their callers hear nothing and try again.
                self.health.committed(u.group.ops.len());
                committed(u.group, Vec::new());
            } else {
                again.append(u.group);
            }
        }
        again.append(std::mem::take(&mut self.pending));
        self.pending = again;
    }

    fn on_event(&mut self, event: Event) {
        let result = match event {
            Event::Ran => {
                if let Some(front) = self.out.front_mut() {
                    front.sent.ran = None;
                }
                return;
            }
            Event::Done(result) => result,
        };
        let Some(out) = self.out.pop_front() else { return };
        match result {
            Ok(pruned) => {
                // It followed every group before it: those committed too.
                for u in std::mem::take(&mut self.unsure) {
                    self.health.committed(u.group.ops.len());
                    committed(u.group, Vec::new());
                }
                self.health.committed(out.group.ops.len());
                committed(out.group, pruned);
            }
            Err(StoreError::Fenced { epoch }) if self.unsure.is_empty() => refused(out.group, epoch),
            Err(e) => {
                if self.unsure.is_empty() {
                    self.w.disconnect();
                    self.failed(&e);
                }
                self.unsure.push(out);
                if self.closed && self.out.is_empty() {
                    self.give_up(e);
                }
            }
        }
    }

    /// The store failed with `e`: nothing is sent until the policy's wait
    /// is over.
    fn failed(&mut self, e: &StoreError) {
        let changes = self.pending.ops.len() + self.unsure.iter().map(|u| u.group.ops.len()).sum::<usize>();
        self.retry_at = Some(Instant::now() + self.health.failed(e, changes));
    }

    /// The master stops and the store does not commit: what was not
    /// stored is told so.
    fn give_up(&mut self, e: StoreError) {
        let mut left = Group::default();
        for u in std::mem::take(&mut self.unsure) {
            left.append(u.group);
        }
        left.append(std::mem::take(&mut self.pending));
        lost(left, e);
    }
}

/// What the oldest group out does next (never, when none is out).
async fn front_event(out: &mut VecDeque<Out>) -> Event {
    let Some(front) = out.front_mut() else { return std::future::pending().await };
    let Sent { ran, done, .. } = &mut front.sent;
    let joined = |r: Result<Result<Pruned, StoreError>, tokio::task::JoinError>| {
        Event::Done(r.unwrap_or_else(|e| Err(StoreError::Task(e))))
    };
    if let Some(ran) = ran {
        tokio::select! {
            biased;
            r = &mut *done => return joined(r),
            _ = ran => return Event::Ran,
        }
    }
    joined(done.await)
}

/// Sleeps until `at` (never, when none).
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
