//! Miners' seats: a slot (top nonce byte) of one of a source's blobs,
//! given on the source with the fewest miners and freed when dropped. On a
//! follower the leader gives them ([`super::replicas`]): no two miners on
//! any master mine the same nonces.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::replicas::SeatAt;
use super::sources::Source;
use super::{Backend, Pool, Work, template};

/// A miner's place on a source: a slot of one of its blobs. Freed when dropped.
#[derive(Debug)]
pub struct Seat {
    pool: Pool,
    pub source: String,
    pub group: u32,
    pub slot: u8,
    pub work: watch::Receiver<Option<Arc<Work>>>,
    /// Cancelled when the seat is another miner's now (a follower's seat
    /// the leader gave away while the feed was down): log in again.
    pub lost: CancellationToken,
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.pool.inner.miners.fetch_sub(1, Ordering::Relaxed);
        let key = (self.group, self.slot);
        let mine = match self.pool.inner.state.lock().sources.get_mut(&self.source) {
            Some(s) if !self.lost.is_cancelled() => {
                s.seated.remove(&key);
                s.slots.remove(&key)
            }
            _ => false,
        };
        if mine && self.pool.link().is_some() {
            self.pool.release_remote(SeatAt { source: self.source.clone(), group: self.group, slot: self.slot });
        }
    }
}

impl Pool {
    /// Seats a miner on the source with the fewest miners that has slots to
    /// give (a pool that fixes the nonce byte has none); a follower asks
    /// the leader.
    pub async fn join(&self) -> Result<Seat, String> {
        let (source, group, slot, work, lost) = match self.link().cloned() {
            Some(link) => {
                let (at, work, lost) = self.remote_seat(&link).await?;
                (at.source, at.group, at.slot, work, lost)
            }
            None => {
                let (source, group, slot) = self.pick_seat(None)?;
                let work = self.inner.state.lock().sources.get(&source).map(|s| s.work.subscribe());
                let work = work.ok_or("the source was removed")?;
                (source, group, slot, work, CancellationToken::new())
            }
        };
        self.inner.miners.fetch_add(1, Ordering::Relaxed);
        Ok(Seat { pool: self.clone(), source, group, slot, work, lost })
    }

    /// Takes a free slot on the source with the fewest miners, for
    /// `replica`'s miner or (none) one of this master's.
    pub(super) fn pick_seat(&self, replica: Option<&str>) -> Result<(String, u32, u8), String> {
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
        if let Some(replica) = replica {
            s.remote.insert((group, slot), replica.to_owned());
        }
        let wake: Option<Arc<Notify>> = match &s.backend {
            Backend::Daemon { wake, .. } => Some(wake.clone()),
            Backend::Pool { .. } | Backend::Leader => None,
        };
        let id = id.clone();
        drop(st);
        // A new group needs its own blob: ask the daemon for it now.
        if let Some(wake) = wake {
            wake.notify_one();
        }
        Ok((id, group, slot))
    }
}
