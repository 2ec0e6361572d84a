//! The leader's lease: one row (`faena_leader`, migration 4) with the
//! epoch, who holds it and until when, in the server's clock. A master
//! leads while its lease runs and renews it well inside its time; a
//! standby takes it once it has run out, and taking it raises the epoch
//! that fences every write (`write.rs`): the deposed leader's next group
//! finds another epoch and commits nothing.
//!
//! A row with an expiry rather than an advisory lock held by a session:
//! a leader that is paused (SIGSTOP) or cut off keeps its TCP connection,
//! and with it a session lock, until keepalives give up — minutes — while
//! a lease runs out on the server's clock, in `FAENA_LEADER_LEASE_MS`,
//! whatever became of its holder.

use std::time::Duration;

use deadpool_postgres::Pool;

use crate::StoreError;

/// Milliseconds since the epoch, on the server's clock: every master
/// reads the same one, however far theirs drift.
const NOW: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::int8";

/// Who leads the store, as it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    /// Raised by each takeover; fences the writes of every earlier one.
    pub epoch: i64,
    /// What the leader said of itself when it took the lease (none before
    /// any master led).
    pub holder: Option<String>,
    /// How long its lease still runs (zero or less: it has run out).
    pub expires_in_ms: i64,
}

/// Elections on a connection of their own, so that a renewal never
/// waits behind readers for a connection.
#[derive(Clone)]
pub struct Election {
    pool: Pool,
}

impl std::fmt::Debug for Election {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Election").finish_non_exhaustive()
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Election {
    pub(crate) fn new(pool: Pool) -> Self {
        Self { pool }
    }

    /// Takes the lease for `lease` as master `name` (what it says of
    /// itself: `holder`) if nobody holds it (never held, run out or given
    /// up) or `name` itself does — the same master started again on the
    /// same address, which its earlier self cannot still hold: the new
    /// epoch, or none while another leads. The epoch rises either way,
    /// fencing whatever the earlier self left in flight.
    pub async fn try_lead(&self, name: &str, holder: &str, lease: Duration) -> Result<Option<i64>, StoreError> {
        let client = self.pool.get().await.map_err(|e| StoreError::Pool(e.to_string()))?;
        let sql = format!(
            "UPDATE faena_leader SET epoch = epoch + 1, holder = $1, name = $3, expires_at = {NOW} + $2
             WHERE id = 1 AND (expires_at IS NULL OR expires_at <= {NOW} OR name = $3) RETURNING epoch"
        );
        let row = client.query_opt(&sql, &[&holder, &millis(lease), &name]).await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    /// Extends the lease of `epoch` by `lease` from now: false when
    /// another master has taken it since (this one is deposed).
    pub async fn renew(&self, epoch: i64, lease: Duration) -> Result<bool, StoreError> {
        let client = self.pool.get().await.map_err(|e| StoreError::Pool(e.to_string()))?;
        let sql = format!("UPDATE faena_leader SET expires_at = {NOW} + $2 WHERE id = 1 AND epoch = $1 RETURNING 1");
        Ok(client.query_opt(&sql, &[&epoch, &millis(lease)]).await?.is_some())
    }

    /// Gives the lease of `epoch` up now (a clean stop), so a standby
    /// takes over at once instead of when it would have run out.
    pub async fn resign(&self, epoch: i64) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(|e| StoreError::Pool(e.to_string()))?;
        let sql = format!("UPDATE faena_leader SET expires_at = {NOW} WHERE id = 1 AND epoch = $1");
        client.execute(&sql, &[&epoch]).await?;
        Ok(())
    }

    /// Who leads now.
    pub async fn leader(&self) -> Result<Leader, StoreError> {
        let client = self.pool.get().await.map_err(|e| StoreError::Pool(e.to_string()))?;
        let sql = format!("SELECT epoch, holder, coalesce(expires_at - {NOW}, 0) FROM faena_leader WHERE id = 1");
        let row = client.query_one(&sql, &[]).await?;
        Ok(Leader { epoch: row.try_get(0)?, holder: row.try_get(1)?, expires_in_ms: row.try_get(2)? })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use faena_proto::ids::JobId;

    use crate::tests::{noop, outcome, wait_commit};
    use crate::{Retention, Store, StoreError};

    /// Asks `store` to lead until it does (the other's lease running
    /// out); the epoch it took.
    async fn lead_when_free(store: &Store, holder: &str, lease: Duration) -> i64 {
        let election = store.election().expect("a PostgreSQL store holds elections");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(epoch) = election.try_lead(holder, holder, lease).await.expect("asks") {
                return epoch;
            }
            assert!(tokio::time::Instant::now() < deadline, "{holder} never led");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// One leads at a time; its lease, unrenewed, runs out and another
    /// takes it with a newer epoch; the deposed one can neither renew nor
    /// write, and the history names whose epoch wrote each row.
    #[tokio::test]
    async fn one_master_leads_until_its_lease_runs_out_then_another_takes_over() {
        let pg = crate::harness::Postgres::start();
        let a = Store::connect(&pg.url(), Retention::OFF).await.expect("connects");
        let b = Store::connect(&pg.url(), Retention::OFF).await.expect("connects");
        assert!(
            Store::open(
                &tempfile::tempdir().expect("dir").path().join("s.db"),
                crate::SyncMode::Normal,
                Retention::OFF
            )
            .expect("opens")
            .election()
            .is_none()
        );
        let (ea, eb) = (a.election().expect("election"), b.election().expect("election"));
        let lease = Duration::from_millis(300);
        let first = ea.try_lead("a", "a", lease).await.expect("asks").expect("nobody led: a leads");
        assert_eq!(eb.try_lead("b", "b", lease).await.expect("asks"), None, "a's lease runs");
        let now = eb.leader().await.expect("reads");
        assert_eq!((now.epoch, now.holder.as_deref()), (first, Some("a")));
        assert!(now.expires_in_ms > 0 && now.expires_in_ms <= 300, "{now:?}");
        assert!(ea.renew(first, lease).await.expect("renews"));
        a.fence(first);
        let by_a = JobId::new();
        noop(&a, by_a, 0);
        wait_commit(&a).await;

        // a stops renewing: b takes over once the lease has run out.
        let second = lead_when_free(&b, "b", lease).await;
        assert!(second > first);
        assert!(!ea.renew(first, lease).await.expect("asks"), "a is deposed");
        b.fence(second);
        let by_b = JobId::new();
        noop(&b, by_b, 1);
        wait_commit(&b).await;
        let late = JobId::new();
        noop(&a, late, 2);
        let refused = outcome(&a).await.expect("told").expect_err("a's write is fenced");
        assert!(matches!(*refused.0, StoreError::Fenced { .. }), "{:?}", refused.0);
        assert_eq!(pg.sql(&format!("SELECT epoch FROM transitions WHERE job_id = '{by_a}'")), first.to_string());
        assert_eq!(pg.sql(&format!("SELECT epoch FROM transitions WHERE job_id = '{by_b}'")), second.to_string());
        assert_eq!(pg.sql(&format!("SELECT count(*) FROM transitions WHERE job_id = '{late}'")), "0");

        // A clean stop gives the lease up: the next master leads at once.
        eb.resign(second).await.expect("resigns");
        let third = ea.try_lead("a2", "a again", Duration::from_secs(60)).await.expect("asks").expect("free at once");
        assert_eq!(third, second + 1);
        // The same master started again takes its own lease back at once,
        // with a newer epoch; another still waits.
        assert_eq!(eb.try_lead("b", "b", lease).await.expect("asks"), None);
        let fourth = ea.try_lead("a2", "a again, started again", lease).await.expect("asks").expect("its own");
        assert_eq!(fourth, third + 1);
    }
}
