//! The pool's records in the store (`faena_store::mining`: sources with
//! their credentials, blocks found, participants' tallies — in PostgreSQL
//! beside the jobs, or SQLite's `mining.db`), in the pool's own terms.

use std::time::Duration;

use faena_proto::ids::JobId;
use faena_proto::mining::{BlockView, SourceSpec};
use faena_store::mining::{MiningDb, Tally};

use super::accounts::{Kind, Participant, Record};
use faena_store::StoreError;

#[derive(Debug, Clone)]
pub struct Db(MiningDb);

/// Everything read back at start-up.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Each source with the job its workers mined it through, if any.
    pub sources: Vec<(String, SourceSpec, Option<JobId>)>,
    pub blocks: Vec<(String, BlockView)>,
    pub participants: Vec<(Participant, Record)>,
}

impl Db {
    pub fn new(db: MiningDb) -> Self {
        Self(db)
    }

    pub async fn load(&self) -> Result<Loaded, StoreError> {
        let loaded = self.0.load().await?;
        let participants = loaded
            .tallies
            .into_iter()
            .filter_map(|t| {
                let kind = Kind::parse(&t.kind)?;
                let record =
                    Record { source: t.source, valid: t.valid, invalid: t.invalid, stale: t.stale, blocks: t.blocks };
                Some((Participant { name: t.name, kind }, record))
            })
            .collect();
        Ok(Loaded { sources: loaded.sources, blocks: loaded.blocks, participants })
    }

    pub async fn add_source(&self, id: String, spec: &SourceSpec, at_ms: u64) -> Result<(), StoreError> {
        self.0.add_source(id, spec, at_ms).await
    }

    /// The job a source's workers mine it through (adopted after a restart).
    pub async fn set_job(&self, id: String, job: JobId) -> Result<(), StoreError> {
        self.0.set_job(id, job).await
    }

    pub async fn remove_source(&self, id: String) -> Result<(), StoreError> {
        self.0.remove_source(id).await
    }

    pub async fn add_block(&self, source: String, b: BlockView) -> Result<(), StoreError> {
        self.0.add_block(source, b).await
    }

    /// Adds these counts to the stored tallies.
    pub async fn add_tallies(&self, rows: Vec<(Participant, Record)>) -> Result<(), StoreError> {
        let rows = rows
            .into_iter()
            .map(|(p, r)| Tally {
                name: p.name,
                kind: p.kind.as_str().to_owned(),
                source: r.source,
                valid: r.valid,
                invalid: r.invalid,
                stale: r.stale,
                blocks: r.blocks,
            })
            .collect();
        self.0.add_tallies(rows).await
    }

    /// The mining store's own retention (see `faena_store::mining`).
    pub async fn prune(&self, age: Duration, keep_blocks: usize, now_ms: u64) -> Result<(usize, usize), StoreError> {
        self.0.prune(age, keep_blocks, now_ms).await
    }
}
