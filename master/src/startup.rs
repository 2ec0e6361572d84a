//! Starting a master: its listening sockets, bound once, and which part
//! it plays on a shared store — standing by until it can lead, then
//! leading with the lease's epoch — and the store it waits for.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use faena_proto::secret::Secret;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::{Addrs, Config, MasterError, io, leader, standby, store};

/// The master's listening sockets, bound once: a standby forwards on
/// copies of them, and the leader it may become serves on the originals.
pub(crate) struct Listeners {
    pub(crate) http: std::net::TcpListener,
    pub(crate) grpc: std::net::TcpListener,
    pub(crate) stratum: Option<std::net::TcpListener>,
}

impl Listeners {
    pub(crate) fn bind(cfg: &Config) -> Result<Self, MasterError> {
        let bind = |addr: SocketAddr, what: &str| {
            let l = std::net::TcpListener::bind(addr).map_err(io(format!("binding {what} on {addr}")))?;
            l.set_nonblocking(true).map_err(io(format!("{what} listener")))?;
            Ok::<_, MasterError>(l)
        };
        Ok(Self {
            http: bind(cfg.http_addr, "HTTP")?,
            grpc: bind(cfg.grpc_addr, "gRPC")?,
            stratum: cfg.stratum_addr.map(|a| bind(a, "the Stratum server")).transpose()?,
        })
    }

    fn addr(l: &std::net::TcpListener, what: &str) -> Result<SocketAddr, MasterError> {
        l.local_addr().map_err(io(format!("{what} address")))
    }

    /// Tokio listeners on the same sockets (a standby's, while this master waits).
    fn copies(&self) -> Result<standby::Ports, MasterError> {
        let copy = |l: &std::net::TcpListener| {
            tokio::net::TcpListener::from_std(l.try_clone().map_err(io("sharing a listener"))?)
                .map_err(io("sharing a listener"))
        };
        Ok(standby::Ports {
            http: copy(&self.http)?,
            grpc: copy(&self.grpc)?,
            stratum: self.stratum.as_ref().map(copy).transpose()?,
        })
    }
}

/// What a standby serves its own miners with ([`crate::pool::follower`]).
pub(crate) struct Follower {
    pub(crate) cfg: crate::pool::PoolConfig,
    pub(crate) verifier: Arc<crate::verify::Verifier>,
    /// How it calls the leader.
    pub(crate) http: reqwest::Client,
}

/// This master's lead of a shared store.
pub(crate) struct Leading {
    pub(crate) election: store::Election,
    pub(crate) epoch: i64,
    /// Its name in the lease (its advertised web address).
    pub(crate) name: String,
}

/// Stands by while another master leads a shared store; returns the epoch
/// of the lease once this master holds it, or none on a store one master
/// owns (SQLite). A standby announces itself ready once it knows who leads.
pub(crate) async fn take_lead(
    cfg: &Config,
    store: &store::Store,
    token: Arc<Secret>,
    listeners: &Listeners,
    shutdown: &CancellationToken,
    on_ready: &mut Option<impl FnOnce(&Addrs)>,
    follower: Follower,
) -> Result<Option<Leading>, MasterError> {
    let Some(election) = store.election().cloned() else { return Ok(None) };
    let http = Listeners::addr(&listeners.http, "HTTP")?;
    let grpc = Listeners::addr(&listeners.grpc, "gRPC")?;
    let stratum = listeners.stratum.as_ref().map(|l| Listeners::addr(l, "Stratum")).transpose()?;
    let advertise = cfg.advertise_host.as_deref();
    let me = faena_proto::lease::Holder {
        http: standby::advertised(advertise, http),
        grpc: standby::advertised(advertise, grpc),
        stratum: stratum.map(|s| standby::advertised(advertise, s)),
        web_tls: cfg.web_tls,
    };
    let lease = Duration::from_millis(cfg.leader_lease_ms);
    let (leader_tx, mut leader_rx) = tokio::sync::watch::channel(None);
    let stop_standby = CancellationToken::new();
    let tasks = TaskTracker::new();
    // Its miners are its own: their shares verified and counted here, the
    // leader's work mirrored, seats and blocks the leader's.
    let pool = match listeners.stratum {
        Some(_) => {
            let db = crate::pool::db::Db::new(store::mining::MiningDb::beside(store, &cfg.data_dir.join("mining.db"))?);
            let key = faena_common::signing::peer_key(&token);
            let link = crate::pool::follower::Link::new(follower.http, leader_rx.clone(), key, me.name().to_owned());
            let metrics = Arc::new(crate::metrics::Metrics::default());
            Some(crate::pool::Pool::follow_leader(follower.cfg, follower.verifier, db, metrics, link))
        }
        None => None,
    };
    standby::serve(listeners.copies()?, leader_rx.clone(), token, pool.clone(), stop_standby.clone(), &tasks);
    let won = {
        let elect = leader::elect(&election, &me, lease, cfg.mqtt_url.is_none(), &leader_tx, shutdown);
        tokio::pin!(elect);
        loop {
            tokio::select! {
                won = &mut elect => break won,
                Ok(()) = leader_rx.changed(), if on_ready.is_some() => {
                    if let Some(ready) = on_ready.take() {
                        ready(&Addrs { http, grpc, mqtt: String::new(), stratum, role: "standby" });
                    }
                }
            }
        }
    };
    stop_standby.cancel();
    tasks.close();
    if let Some(pool) = pool {
        // Its miners' last counts go to the store before this master leads.
        pool.stop().await;
    }
    match won {
        Ok(epoch) => {
            tracing::info!(epoch, name = %me.name(), "this master leads the store");
            store.fence(epoch);
            Ok(Some(Leading { election, epoch, name: me.name().to_owned() }))
        }
        Err(leader::NotLeading::Stopped) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Connects to the PostgreSQL store, waiting as long as it cannot be
/// reached (a failover of its own under way, a server still starting): a
/// master started, or started again after losing the lead, while the store
/// is away comes up when it is back. None when stopped meanwhile.
pub(crate) async fn connect_store(
    url: &str,
    retention: store::Retention,
    writers: usize,
    shutdown: &CancellationToken,
) -> Result<Option<store::Store>, MasterError> {
    let mut backoff = faena_common::retry::Policy::RECONNECT.start();
    loop {
        match store::Store::connect_writers(url, retention, writers).await {
            Ok(store) => return Ok(Some(store)),
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, "the store cannot be reached yet; trying again");
            }
            Err(e) => return Err(e.into()),
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(None),
            () = tokio::time::sleep(backoff.wait()) => {}
        }
    }
}
