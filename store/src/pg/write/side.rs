//! The writer's statements beside the job tables: unique keys taken and
//! freed, named documents (groups' limits, schedules) stored and removed.

use tokio_postgres::{Client, Statement};
use uuid::Uuid;

use super::Group;
use crate::StoreError;

/// What a group does to a unique key in the end.
#[derive(Debug)]
pub(super) enum KeyChange {
    /// Held by this job until then (none: until it finishes).
    Take(Uuid, Option<i64>),
    /// Freed by this job, if it still holds it.
    Free(Uuid),
}

impl Group {
    /// The group's named documents (stored, removed) and schedules' firings.
    pub(super) async fn named(&self, tx: &Client, [put, delete, fired]: [&Statement; 3]) -> Result<(), StoreError> {
        if !self.fired.is_empty() {
            let names: Vec<&str> = self.fired.keys().map(String::as_str).collect();
            let at: Vec<i64> = self.fired.values().map(|f| f.0).collect();
            let jobs: Vec<Option<Uuid>> = self.fired.values().map(|f| f.1).collect();
            tx.execute(fired, &[&names, &at, &jobs]).await?;
        }
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
        if !stored.0.is_empty() {
            tx.execute(put, &[&stored.0, &stored.1, &stored.2]).await?;
        }
        if !removed.0.is_empty() {
            tx.execute(delete, &[&removed.0, &removed.1]).await?;
        }
        Ok(())
    }

    /// The group's unique keys: those expired by `now` dropped, then the
    /// group's taken and freed.
    pub(super) async fn keys(
        &self,
        tx: &Client,
        [expire, take, free]: [&Statement; 3],
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
        if !taken.0.is_empty() {
            tx.execute(expire, &[&now]).await?;
            tx.execute(take, &[&taken.0, &taken.1, &taken.2]).await?;
        }
        if !freed.0.is_empty() {
            tx.execute(free, &[&freed.0, &freed.1]).await?;
        }
        Ok(())
    }
}
