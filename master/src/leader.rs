//! Which master leads a shared (PostgreSQL) store: the lease in the
//! store (`faena_store::Election`), taken when free, renewed well inside
//! its time, and given up on a clean stop. A master that cannot lead
//! stands by ([`crate::standby`]) until the lease is free; a leader that
//! loses it steps down by starting again as a standby.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use faena_store::{Election, Leader};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use faena_proto::lease::Holder;

/// How often a leader renews its lease: three chances inside it.
fn renew_every(lease: Duration) -> Duration {
    lease / 3
}

/// The longest a standby waits between looks at the lease.
fn look_every(lease: Duration) -> Duration {
    lease / 4
}

/// Whether this master still holds its lease, on its own clock: what it
/// sends workers (units, cancels) goes out only while it does. A leader
/// woken from a pause finds the time past its lease and sends nothing,
/// before the renewal that would tell it so has even been tried.
#[derive(Debug, Clone)]
pub struct Held {
    base: Instant,
    /// Milliseconds after `base` the lease is sure to run until (`u64::MAX`:
    /// a store this master owns alone).
    until_ms: Arc<AtomicU64>,
}

impl Held {
    /// A master that owns its store alone always leads it.
    pub fn always() -> Self {
        Self { base: Instant::now(), until_ms: Arc::new(AtomicU64::new(u64::MAX)) }
    }

    /// Held for `lease` from now (just taken).
    pub fn for_lease(lease: Duration) -> Self {
        let held = Self { base: Instant::now(), until_ms: Arc::default() };
        held.until(Instant::now() + lease);
        held
    }

    fn until(&self, at: Instant) {
        let ms = u64::try_from(at.saturating_duration_since(self.base).as_millis()).unwrap_or(u64::MAX - 1);
        self.until_ms.store(ms, Ordering::Relaxed);
    }

    pub fn holds(&self) -> bool {
        let now = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        now < self.until_ms.load(Ordering::Relaxed)
    }
}

/// What a master says of its lead in its retained status, and whether it
/// still holds it.
#[derive(Debug, Clone)]
pub struct Lead {
    pub held: Held,
    /// Its name and its lease's epoch, on a shared store.
    pub shared: Option<(String, i64)>,
}

impl Lead {
    /// A master that owns its store alone.
    pub fn alone() -> Self {
        Self { held: Held::always(), shared: None }
    }
}

/// Why this master is not leading.
#[derive(Debug, thiserror::Error)]
pub enum NotLeading {
    #[error(
        "another master ({0}) leads this store, and this one runs the embedded MQTT broker, which serves one machine: several masters need one external broker (FAENA_MQTT_URL, e.g. Mosquitto)"
    )]
    EmbeddedBroker(String),
    #[error("stopped while standing by")]
    Stopped,
}

/// Waits until this master holds the lease: its epoch. Meanwhile `leader`
/// tells the standby who leads. With `embedded_broker`, finding another
/// leader is an error rather than a reason to wait.
pub async fn elect(
    election: &Election,
    me: &Holder,
    lease: Duration,
    embedded_broker: bool,
    leader: &watch::Sender<Option<Holder>>,
    stop: &CancellationToken,
) -> Result<i64, NotLeading> {
    let me_text = me.to_string();
    let mut announced = false;
    loop {
        let wait = match election.try_lead(me.name(), &me_text, lease).await {
            Ok(Some(epoch)) => return Ok(epoch),
            Ok(None) => match election.leader().await {
                Ok(now) => {
                    let holder = Holder::parse(now.holder.as_deref());
                    if embedded_broker {
                        let name = holder.map_or_else(|| "unknown".to_owned(), |h| h.name().to_owned());
                        return Err(NotLeading::EmbeddedBroker(name));
                    }
                    if !announced || leader.borrow().as_ref() != holder.as_ref() {
                        announced = true;
                        tracing::info!(leader = %holder.as_ref().map_or("unknown", |h| h.name()), epoch = now.epoch, "another master leads; standing by");
                    }
                    // Only a new leader is news: the follower pool opens
                    // its feed again on every change it is told of.
                    leader.send_if_modified(|seen| {
                        let news = *seen != holder;
                        if news {
                            *seen = holder;
                        }
                        news
                    });
                    until_free(&now, lease)
                }
                Err(e) => failed(&e, lease),
            },
            Err(e) => failed(&e, lease),
        };
        tokio::select! {
            () = stop.cancelled() => return Err(NotLeading::Stopped),
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Until the lease may be free: just past its end, but never longer than
/// [`look_every`] (a leader that resigns frees it early).
fn until_free(now: &Leader, lease: Duration) -> Duration {
    let left = Duration::from_millis(u64::try_from(now.expires_in_ms).unwrap_or(0));
    (left + Duration::from_millis(5)).min(look_every(lease))
}

fn failed(e: &faena_store::StoreError, lease: Duration) -> Duration {
    tracing::warn!(error = %e, "could not read the leader's lease; trying again");
    look_every(lease)
}

/// Renews the lease of `epoch` until `stop`; cancels `deposed` once
/// another master has taken it. A lease that ran out on this master's own
/// clock before it was renewed (the store away, or this master paused)
/// has lapsed: [`Held`] says so and nothing goes to the workers, while the
/// renewals go on — the store may still hold this epoch (nobody took
/// over: a lone master rides out a store outage without a restart), or
/// say another has it (then this master steps down).
pub async fn keep(
    election: Election,
    epoch: i64,
    lease: Duration,
    held: Held,
    deposed: CancellationToken,
    stop: CancellationToken,
) {
    let mut held_until = tokio::time::Instant::now() + lease;
    let mut lapsed = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(renew_every(lease)) => {}
        }
        let asked = tokio::time::Instant::now();
        if asked >= held_until && !lapsed {
            lapsed = true;
            tracing::warn!(
                epoch,
                "the lease ran out before it was renewed (the store away, or this master paused): nothing goes to the workers until it is renewed or another master has it"
            );
        }
        match tokio::time::timeout(renew_every(lease), election.renew(epoch, lease)).await {
            Ok(Ok(true)) => {
                if std::mem::take(&mut lapsed) {
                    tracing::info!(epoch, "the lease is renewed: this master leads on");
                }
                held_until = asked + lease;
                held.until(held_until.into_std());
            }
            Ok(Ok(false)) => {
                tracing::warn!(epoch, "another master took the lease");
                deposed.cancel();
                return;
            }
            Ok(Err(e)) => tracing::warn!(epoch, error = %e, "could not renew the lease; trying again"),
            Err(_) => tracing::debug!(epoch, "renewing the lease took too long; trying again"),
        }
    }
}

/// Starts this master again, as a standby, on the same addresses: what
/// the deposed leader had in memory is no longer the store's, and a fresh
/// process is the one sure way to drop all of it. Returns only if the
/// new start failed.
pub fn step_down(addresses: Vec<(&'static str, String)>) {
    tracing::warn!("this master no longer leads: starting again as a standby");
    faena_common::lifecycle::reexec_with(addresses);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_held_until_its_end_and_always_when_alone() {
        assert!(Held::always().holds());
        let held = Held::for_lease(Duration::from_secs(60));
        assert!(held.holds());
        held.until(Instant::now() - Duration::from_millis(1));
        assert!(!held.holds());
    }

    #[test]
    fn a_standby_looks_again_just_after_the_lease_would_end_and_never_waits_long() {
        let lease = Duration::from_millis(3_000);
        let at = |ms| until_free(&Leader { epoch: 1, holder: None, expires_in_ms: ms }, lease);
        assert_eq!(at(100), Duration::from_millis(105));
        assert_eq!(at(-50), Duration::from_millis(5));
        assert_eq!(at(2_900), Duration::from_millis(750));
        assert!(renew_every(lease) * 3 <= lease);
    }
}
