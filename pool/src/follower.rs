//! A follower pool: the Stratum server of a master that stands by. Its
//! sources mirror the leader's ([`super::replicas`]): the work comes down
//! a feed the follower keeps open, a miner's seat is the leader's to give,
//! and a share good enough for upstream goes back to the leader. The rest
//! is this master's own: its miners' connections, their verification, and
//! their counts, added to the shared store before a share is said accepted.
//!
//! When the feed is lost (the leader died), the follower's miners keep
//! their seats and their work, and their shares keep counting; the feed
//! opens again on whoever leads next, claiming the seats back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use faena_proto::mining::{SourceShares, SourceSpec, SourceState};
use futures::StreamExt;
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::replicas::{Counted, FeedLine, Found, Hello, MAX_LINE, Mirror, Report, SeatAt};
use super::sources::Source;
use super::{Backend, Pool, Template, Work};
use faena_proto::lease::Holder;

/// The leader says something at least this often ([`FeedLine::Alive`]);
/// a feed silent for longer is taken as lost and opened again.
pub const FEED_SILENCE: Duration = Duration::from_secs(15);

/// The longest a follower waits for the leader to open the feed; its
/// miners' logins wait meanwhile ([`Link`]'s `opening`).
const FEED_OPEN_WAIT: Duration = Duration::from_secs(5);

/// How a follower reaches the leader: its web port, with the cluster's
/// peer key ([`faena_common::signing::peer_key`]).
#[derive(Debug)]
pub struct Link {
    http: reqwest::Client,
    leader: watch::Receiver<Option<Holder>>,
    key: String,
    /// This master's name (its advertised web address).
    replica: String,
    /// Held to write while a feed opens, to read while a miner is seated:
    /// the leader frees the seats a new feed does not claim, so a seat
    /// it gave must be in this master's claim before the feed opens.
    opening: tokio::sync::RwLock<()>,
}

/// The header a follower's requests carry the peer key in.
pub const PEER_HEADER: &str = "x-faena-peer";

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("no master leads")]
    NoLeader,
    #[error("the leader could not be reached: {0}")]
    Unreachable(#[from] reqwest::Error),
    #[error("the leader answered {status}: {message}")]
    Refused { status: u16, message: String },
}

impl Link {
    pub fn new(http: reqwest::Client, leader: watch::Receiver<Option<Holder>>, key: String, replica: String) -> Self {
        Self { http, leader, key, replica, opening: tokio::sync::RwLock::new(()) }
    }

    fn url(&self, path: &str) -> Result<String, LinkError> {
        let leader = self.leader.borrow();
        let h = leader.as_ref().ok_or(LinkError::NoLeader)?;
        let scheme = if h.web_tls { "https" } else { "http" };
        Ok(format!("{scheme}://{}{path}", h.http))
    }

    async fn post(
        &self,
        path: &str,
        body: &impl Serialize,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, LinkError> {
        let mut req = self.http.post(self.url(path)?).header(PEER_HEADER, &self.key).json(body);
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        let resp = req.send().await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        let message = body["error"]["message"].as_str().unwrap_or("no reason given").to_owned();
        Err(LinkError::Refused { status, message })
    }

    async fn seat(&self) -> Result<SeatAt, LinkError> {
        let hello = Hello { replica: self.replica.clone(), seats: Vec::new() };
        let resp = self.post("/internal/pool/seats", &hello, Some(Duration::from_secs(5))).await?;
        Ok(resp.json().await?)
    }

    async fn release(&self, seat: &SeatAt) -> Result<(), LinkError> {
        let body = serde_json::json!({"replica": self.replica, "seat": seat});
        self.post("/internal/pool/seats/release", &body, Some(Duration::from_secs(5))).await.map(drop)
    }
}

impl Pool {
    /// The leader this pool follows, when it is a follower's.
    pub(super) fn link(&self) -> Option<&Arc<Link>> {
        self.inner.link.as_ref()
    }

    /// Keeps the feed from the leader open until the pool stops.
    pub(super) async fn follow(&self, link: Arc<Link>) {
        let mut leader = link.leader.clone();
        let mut backoff = faena_common::retry::Policy::RECONNECT.start();
        loop {
            let opened = Instant::now();
            tokio::select! {
                () = self.inner.cancel.cancelled() => return,
                // Another master leads: the feed opens again, on it.
                Ok(()) = leader.changed() => continue,
                ended = self.read_feed(&link) => match ended {
                    Ok(()) => tracing::info!("the leader's pool feed ended; opening it again"),
                    Err(LinkError::NoLeader) => {}
                    Err(e) => tracing::warn!(error = %e, "the leader's pool feed failed; opening it again"),
                },
            }
            if opened.elapsed() > FEED_SILENCE {
                backoff = faena_common::retry::Policy::RECONNECT.start();
            }
            tokio::select! {
                () = self.inner.cancel.cancelled() => return,
                Ok(()) = leader.changed() => {}
                () = tokio::time::sleep(backoff.wait()) => {}
            }
        }
    }

    /// Opens the feed, claiming the seats this master's miners hold, and
    /// mirrors what it says until it ends or falls silent.
    async fn read_feed(&self, link: &Link) -> Result<(), LinkError> {
        let opening = link.opening.write().await;
        let hello = Hello { replica: link.replica.clone(), seats: self.local_seats() };
        let open = tokio::time::timeout(FEED_OPEN_WAIT, link.post("/internal/pool/feed", &hello, None)).await;
        drop(opening);
        let Ok(resp) = open else {
            tracing::warn!("the leader did not open its pool feed in time");
            return Ok(());
        };
        let mut body = resp?.bytes_stream();
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let chunk = match tokio::time::timeout(FEED_SILENCE, body.next()).await {
                Err(_) => {
                    tracing::warn!("the leader's pool feed fell silent");
                    return Ok(());
                }
                Ok(None) => return Ok(()),
                Ok(Some(chunk)) => chunk?,
            };
            buf.extend_from_slice(&chunk);
            while let Some(end) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=end).collect();
                match serde_json::from_slice::<FeedLine>(&line) {
                    Ok(line) => self.on_feed(line),
                    Err(e) => tracing::warn!(error = %e, "a line of the leader's pool feed did not parse; skipped"),
                }
            }
            if buf.len() > MAX_LINE {
                tracing::warn!("a line of the leader's pool feed is too long; opening the feed again");
                return Ok(());
            }
        }
    }

    fn on_feed(&self, line: FeedLine) {
        match line {
            FeedLine::Refused { seats } => self.evict(&seats),
            FeedLine::Work { sources } => self.mirror(sources),
            FeedLine::Alive => {}
        }
    }

    /// The seats this master's miners hold now.
    fn local_seats(&self) -> Vec<SeatAt> {
        let st = self.inner.state.lock();
        let seats = st.sources.iter().flat_map(|(id, s)| {
            s.slots.iter().map(move |(group, slot)| SeatAt { source: id.clone(), group: *group, slot: *slot })
        });
        seats.collect()
    }

    /// Seats another miner holds now: theirs log in again.
    fn evict(&self, seats: &[SeatAt]) {
        let mut st = self.inner.state.lock();
        for seat in seats {
            if let Some(s) = st.sources.get_mut(&seat.source)
                && let Some(lost) = s.seated.remove(&(seat.group, seat.slot))
            {
                s.slots.remove(&(seat.group, seat.slot));
                lost.cancel();
            }
        }
        if !seats.is_empty() {
            tracing::warn!(
                seats = seats.len(),
                "seats taken by other miners while the feed was away; their miners log in again"
            );
        }
    }

    /// The leader's sources as they are now: new ones mirrored, gone ones
    /// dropped (their miners log in again), new work installed.
    fn mirror(&self, sources: Vec<Mirror>) {
        let ids: Vec<String> = sources.iter().map(|m| m.id.clone()).collect();
        let mut keys = None;
        {
            let mut st = self.inner.state.lock();
            st.sources.retain(|id, _| ids.contains(id));
            for m in sources {
                let s = st.sources.entry(m.id.clone()).or_insert_with(|| self.mirrored(&m));
                let key = m.templates.first().map(|t| t.key.clone());
                if install_mirrored(s, m.templates, self.inner.cfg.stale_grace) {
                    keys = keys.or(key);
                }
            }
        }
        self.pin_keys(keys.as_deref());
    }

    /// A source of the leader's, as this master mirrors it.
    fn mirrored(&self, m: &Mirror) -> Source {
        let (work, _) = watch::channel(None);
        let mut s = Source::new(m.spec.clone(), work, Backend::Leader, self.inner.cancel.child_token());
        s.state = SourceState::Mining;
        s
    }

    /// A miner's seat, from the leader.
    pub(super) async fn remote_seat(
        &self,
        link: &Link,
    ) -> Result<(SeatAt, watch::Receiver<Option<Arc<Work>>>, CancellationToken), String> {
        let _opening = link.opening.read().await;
        let at = link.seat().await.map_err(|e| match e {
            LinkError::Refused { message, .. } => message,
            e => format!("no seat right now ({e}); try again shortly"),
        })?;
        let seated = {
            let mut st = self.inner.state.lock();
            st.sources.get_mut(&at.source).map(|s| {
                let lost = CancellationToken::new();
                s.slots.insert((at.group, at.slot));
                s.seated.insert((at.group, at.slot), lost.clone());
                (s.work.subscribe(), lost)
            })
        };
        match seated {
            Some((work, lost)) => Ok((at, work, lost)),
            None => {
                self.release_remote(at);
                Err("no mining source has work for miners right now; try again shortly".into())
            }
        }
    }

    /// Gives a seat back to the leader (in the background: a miner left).
    pub(super) fn release_remote(&self, seat: SeatAt) {
        let Some(link) = self.link().cloned() else { return };
        let Ok(handle) = tokio::runtime::Handle::try_current() else { return };
        handle.spawn(async move {
            if let Err(e) = link.release(&seat).await {
                tracing::debug!(error = %e, "a seat could not be given back; the leader frees it with the feed");
            }
        });
    }

    /// A share for upstream: the leader submits it.
    pub(super) fn found_remote(&self, template: &Template, who: &str, nonce: u32, hash: &[u8; 32], source: &str) {
        let Some(link) = self.link().cloned() else { return };
        let found = Found {
            source: source.to_owned(),
            seq: template.seq,
            nonce,
            hash: faena_proto::jobs::encode_hex(hash),
            participant: who.to_owned(),
        };
        self.inner.tasks.spawn(async move {
            match link.post("/internal/pool/found", &found, Some(Duration::from_secs(10))).await {
                Ok(_) => tracing::info!(source = %found.source, participant = %found.participant, "a share for upstream went to the leader"),
                Err(e) => tracing::error!(source = %found.source, error = %e, "a share for upstream could not reach the leader; it is lost"),
            }
        });
    }

    /// Tells the leader what was counted (and saved) here since the last time.
    pub(super) fn report(&self, saved: &[(super::accounts::Participant, super::accounts::Record)]) {
        let Some(link) = self.link().cloned() else { return };
        let (sources, work) = {
            let mut st = self.inner.state.lock();
            let sources: Vec<(String, SourceShares)> =
                st.sources.iter_mut().filter_map(|(id, s)| s.unreported().map(|d| (id.clone(), d))).collect();
            (sources, st.accounts.take_work())
        };
        let participants: Vec<Counted> =
            saved.iter().map(|(who, r)| Counted::new(who, r, work.get(who).copied().unwrap_or(0))).collect();
        if sources.is_empty() && participants.is_empty() {
            return;
        }
        let report = Report { replica: link.replica.clone(), sources, participants };
        self.inner.tasks.spawn(async move {
            if let Err(e) = link.post("/internal/pool/report", &report, Some(Duration::from_secs(10))).await {
                tracing::debug!(error = %e, "the leader did not take a report (its views miss it; the store has it)");
            }
        });
    }
}

/// Installs a mirrored source's templates; true when the work moved on
/// (not only more groups of the same templates).
fn install_mirrored(s: &mut Source, templates: Vec<Template>, grace: Duration) -> bool {
    let old = s.work.borrow().clone();
    let same =
        |w: &Work| w.templates.len() == templates.len() && w.templates.iter().zip(&templates).all(|(a, b)| **a == *b);
    if old.as_deref().is_some_and(same) || templates.is_empty() {
        return false;
    }
    let moved = old.as_ref().and_then(|w| w.main()).map(|t| t.seq) != templates.first().map(|t| t.seq);
    let work = Arc::new(Work { templates: templates.into_iter().map(Arc::new).collect() });
    if moved && let Some(old) = old {
        s.previous = Some((old, Instant::now() + grace));
        s.templates += 1;
    }
    s.work.send_replace(Some(work));
    moved
}

/// A source's spec as the followers see it: without the pool's password.
pub fn public_spec(spec: &SourceSpec) -> SourceSpec {
    match spec {
        SourceSpec::Pool { url, user, .. } => SourceSpec::Pool { url: url.clone(), user: user.clone(), pass: None },
        daemon => daemon.clone(),
    }
}

/// Shares counted on a mirrored source since the last report.
pub(super) fn delta(now: &SourceShares, before: &SourceShares) -> SourceShares {
    SourceShares {
        valid: now.valid - before.valid,
        invalid: now.invalid - before.invalid,
        stale: now.stale - before.stale,
        upstream_accepted: 0,
        upstream_rejected: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(seq: u64, group: u32) -> Template {
        Template {
            seq,
            group,
            key: vec![1; 32],
            next_key: None,
            blob: vec![seq as u8; 76],
            height: Some(5),
            network_difficulty: Some(200),
            block: None,
            upstream: None,
            fixed_byte: None,
        }
    }

    fn source() -> Source {
        let spec = SourceSpec::Daemon { url: "http://127.0.0.1:1".into(), wallet: "w".into() };
        Source::new(spec, watch::channel(None).0, Backend::Leader, CancellationToken::new())
    }

    fn seqs(s: &Source) -> Vec<u64> {
        s.work.borrow().as_ref().map(|w| w.templates.iter().map(|t| t.seq).collect()).unwrap_or_default()
    }

    #[test]
    fn mirrored_work_moves_on_keeps_the_last_for_stale_shares_and_takes_added_groups_in_place() {
        let mut s = source();
        let grace = Duration::from_secs(10);
        assert!(install_mirrored(&mut s, vec![template(7, 0)], grace));
        assert!(s.previous.is_none());
        assert!(!install_mirrored(&mut s, vec![template(7, 0)], grace), "the same work again changes nothing");
        // More groups of the same templates: miners seated stay on theirs.
        assert!(!install_mirrored(&mut s, vec![template(7, 0), template(8, 1)], grace));
        assert_eq!((seqs(&s), s.previous.is_none()), (vec![7, 8], true));
        // New work: the last stays good for stale shares within the grace.
        assert!(install_mirrored(&mut s, vec![template(9, 0)], grace));
        assert_eq!(seqs(&s), vec![9]);
        let now = Instant::now();
        assert_eq!(s.template(8, now).map(|(t, current)| (t.seq, current)), Some((8, false)));
        assert!(s.template(8, now + grace * 2).is_none());
        assert!(!install_mirrored(&mut s, Vec::new(), grace), "no templates: the last work stays");
        assert_eq!(seqs(&s), vec![9]);
    }

    #[test]
    fn followers_are_not_sent_a_pools_password() {
        let pool = SourceSpec::Pool {
            url: faena_proto::mining::Urls::One("stratum+tcp://127.0.0.1:3333".into()),
            user: "u".into(),
            pass: Some("secret".into()),
        };
        assert!(matches!(public_spec(&pool), SourceSpec::Pool { pass: None, .. }));
        let daemon = SourceSpec::Daemon { url: "http://127.0.0.1:1".into(), wallet: "w".into() };
        assert_eq!(public_spec(&daemon), daemon);
    }

    #[test]
    fn a_followers_seats_are_freed_together_and_counted_by_follower() {
        let mut s = source();
        for (key, who) in [((0, 1), "a"), ((0, 2), "b"), ((0, 3), "a")] {
            s.slots.insert(key);
            s.remote.insert(key, who.to_owned());
        }
        s.slots.insert((0, 4));
        assert_eq!((s.held_by("a"), s.held_by("b")), (2, 1));
        s.free_remote("a");
        assert_eq!(s.slots.iter().copied().collect::<Vec<_>>(), vec![(0, 2), (0, 4)]);
        assert_eq!((s.held_by("a"), s.held_by("b")), (0, 1));
    }

    #[test]
    fn shares_are_reported_once() {
        let mut s = source();
        assert!(s.unreported().is_none());
        s.shares.valid = 5;
        s.shares.invalid = 1;
        assert_eq!(s.unreported().map(|d| (d.valid, d.invalid, d.stale)), Some((5, 1, 0)));
        assert!(s.unreported().is_none());
        s.shares.stale += 2;
        assert_eq!(s.unreported().map(|d| (d.valid, d.stale)), Some((0, 2)));
    }
}
