//! Miners' seats: a slot (top nonce byte) of one of a source's blobs,
//! given on the source with the fewest miners and freed when dropped.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::watch;

use super::{Backend, Pool, Source, Work, template};

/// A miner's place on a source: a slot of one of its blobs. Freed when dropped.
#[derive(Debug)]
pub struct Seat {
    pool: Pool,
    pub source: String,
    pub group: u32,
    pub slot: u8,
    pub work: watch::Receiver<Option<Arc<Work>>>,
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.pool.inner.miners.fetch_sub(1, Ordering::Relaxed);
        if let Some(s) = self.pool.inner.state.lock().sources.get_mut(&self.source) {
            s.slots.remove(&(self.group, self.slot));
        }
    }
}

impl Pool {
    /// Seats a miner on the source with the fewest miners that has slots to
    /// give (a pool that fixes the nonce byte has none).
    pub fn join(&self) -> Result<Seat, String> {
        let mut st = self.inner.state.lock();
        let mut best: Option<(&String, &mut Source)> = None;
        for (id, s) in st.sources.iter_mut() {
            // Only a source with work now: the login answer carries a job.
            let open = s.work.borrow().as_ref().and_then(|w| w.main().map(|t| t.has_miner_slots())).unwrap_or(false);
            let daemon = matches!(s.backend, Backend::Daemon { .. });
            let full = !daemon && s.slots.len() >= template::MINER_SLOTS as usize;
            if !open || full {
                continue;
            }
            if best.as_ref().is_none_or(|(_, b)| s.slots.len() < b.slots.len()) {
                best = Some((id, s));
            }
        }
        let Some((id, s)) = best else {
            return Err("no mining source has work for miners right now; try again shortly".into());
        };
        let n = s.slots.len() as u32;
        let free = (0..=n).map(|i| (i / template::MINER_SLOTS, (i % template::MINER_SLOTS + 1) as u8));
        let Some((group, slot)) = free.into_iter().find(|k| !s.slots.contains(k)) else {
            return Err("no free slot".into());
        };
        s.slots.insert((group, slot));
        let work = s.work.subscribe();
        let wake = match &s.backend {
            Backend::Daemon { wake, .. } => Some(wake.clone()),
            Backend::Pool { .. } => None,
        };
        let seat = Seat { pool: self.clone(), source: id.clone(), group, slot, work };
        self.inner.miners.fetch_add(1, Ordering::Relaxed);
        drop(st);
        // A new group needs its own blob: ask the daemon for it now.
        if let Some(wake) = wake {
            wake.notify_one();
        }
        Ok(seat)
    }
}
