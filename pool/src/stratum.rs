//! The Stratum server miners (XMRig 6.x, unmodified) connect to: one task
//! per connection, lines of at most `max_line` bytes, a request-rate token
//! bucket, a login deadline and an idle timeout; a miner that cannot keep up
//! with its own writes is dropped.
//!
//! A miner is seated on a source ([`Pool::join`]): it mines one top-nonce-
//! byte slot of one of the source's blobs, sent with that byte set so XMRig
//! mines in nicehash mode and never leaves its slot. Its difficulty follows
//! its verified shares (vardiff, aiming at the pool's share interval and
//! never above the upstream difficulty, so no block goes unreported). Every
//! share is re-hashed by the verifier, within the verification budget and
//! its address's part of it. What an address may cost, across all its
//! connections (caps, bans that outlive a connection), is [`Addresses`]';
//! what one connection may, [`miner::Miner`]'s.

mod addresses;
mod miner;
mod session;

pub use addresses::{AddressRules, Addresses, Refusal};

use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use faena_proto::stratum;

use super::Pool;

/// Serves miners on `listener` until `cancel`; each connection is tracked on `tasks`.
pub async fn serve(listener: TcpListener, pool: Pool, tasks: TaskTracker, cancel: CancellationToken) {
    loop {
        let (stream, peer) = tokio::select! {
            () = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "Stratum accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        if let Err(refused) = pool.connect(peer.ip()) {
            // Said without waiting: a client that does not read gets nothing.
            let _ = stream.try_write(stratum::error(&serde_json::Value::Null, &refused.to_string()).as_bytes());
            pool.inner.metrics.stratum_refused(refused.reason());
            continue;
        }
        let (pool, cancel) = (pool.clone(), cancel.clone());
        tasks.spawn(async move {
            pool.inner.metrics.stratum_connection(true);
            let counted = session::run(pool.clone(), stream, peer, cancel).await;
            pool.inner.metrics.stratum_connection(false);
            if let Some(ip) = counted {
                pool.disconnect(ip);
            }
        });
    }
}
