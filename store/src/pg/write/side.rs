//! The writer's statements beside the job tables: unique keys taken and
//! freed, named documents (groups' limits, schedules) stored and removed.
//!
//! Every statement a group needs is sent when the group's future is first
//! polled, in order, like the job tables' (`commit` in `write.rs`): a
//! statement sent only once the one before it was answered would reach
//! the server after the group's `COMMIT`, outside its transaction.

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};
use uuid::Uuid;

use super::group::Group;
use crate::StoreError;

/// What a group does to a unique key in the end.
#[derive(Debug)]
pub(super) enum KeyChange {
    /// Held by this job until then (none: until it finishes).
    Take(Uuid, Option<i64>),
    /// Freed by this job, if it still holds it.
    Free(Uuid),
}

/// A statement's parameters.
type Params<'a, const N: usize> = [&'a (dyn ToSql + Sync); N];

/// Runs `stmt` with `params` when `needed`: sent at once (on the first
/// poll), answered in turn.
async fn execute_if(
    needed: bool,
    tx: &Client,
    stmt: &Statement,
    params: &[&(dyn ToSql + Sync)],
) -> Result<(), StoreError> {
    if needed {
        tx.execute(stmt, params).await?;
    }
    Ok(())
}

impl Group {
    /// The group's named documents (stored, removed) and schedules' firings.
    pub(super) async fn named(&self, tx: &Client, [put, delete, fired]: [&Statement; 3]) -> Result<(), StoreError> {
        let names: Vec<&str> = self.fired.keys().map(String::as_str).collect();
        let at: Vec<i64> = self.fired.values().map(|f| f.0).collect();
        let jobs: Vec<Option<Uuid>> = self.fired.values().map(|f| f.1).collect();
        let (mut stored, mut removed) = ((Vec::new(), Vec::new(), Vec::new()), (Vec::new(), Vec::new()));
        for ((kind, name), doc) in &self.named {
            match doc {
                Some(doc) => {
                    stored.0.push(*kind);
                    stored.1.push(name.as_str());
                    stored.2.push(doc.as_str());
                }
                None => {
                    removed.0.push(*kind);
                    removed.1.push(name.as_str());
                }
            }
        }
        let (f, p, d): (Params<3>, Params<3>, Params<2>) =
            ([&names, &at, &jobs], [&stored.0, &stored.1, &stored.2], [&removed.0, &removed.1]);
        let (a, b, c) = tokio::join!(
            execute_if(!names.is_empty(), tx, fired, &f),
            execute_if(!stored.0.is_empty(), tx, put, &p),
            execute_if(!removed.0.is_empty(), tx, delete, &d),
        );
        a.and(b).and(c)
    }

    /// The group's unique keys: taken (in key order), then those expired
    /// by `now` dropped and the group's freed (never waiting: see
    /// `TAKE_KEYS`).
    pub(super) async fn keys(
        &self,
        tx: &Client,
        [take, expire, free]: [&Statement; 3],
        now: i64,
    ) -> Result<(), StoreError> {
        let (mut taken, mut freed) = ((Vec::new(), Vec::new(), Vec::new()), (Vec::new(), Vec::new()));
        for (key, change) in &self.keys {
            match change {
                KeyChange::Take(job, until) => {
                    taken.0.push(key.as_str());
                    taken.1.push(*job);
                    taken.2.push(*until);
                }
                KeyChange::Free(job) => {
                    freed.0.push(key.as_str());
                    freed.1.push(*job);
                }
            }
        }
        let (t, e, f): (Params<3>, Params<1>, Params<2>) =
            ([&taken.0, &taken.1, &taken.2], [&now], [&freed.0, &freed.1]);
        let (a, b, c) = tokio::join!(
            execute_if(!taken.0.is_empty(), tx, take, &t),
            execute_if(!taken.0.is_empty(), tx, expire, &e),
            execute_if(!freed.0.is_empty(), tx, free, &f),
        );
        a.and(b).and(c)
    }
}
