//! The schema, as versioned forward-only migrations applied at start in
//! one transaction under an advisory lock: two masters starting together
//! apply each migration once, the second waiting for the first.

use tokio_postgres::Client;

use crate::StoreError;

/// The advisory lock's key ("faena" in ASCII).
const LOCK: i64 = 0x0066_6165_6e61;

/// Every migration, in order; a released one is never edited, only
/// followed by another.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "jobs and their history",
        "CREATE TABLE jobs (
        row_id BIGINT NOT NULL,
        id UUID PRIMARY KEY,
        kind TEXT NOT NULL,
        params TEXT NOT NULL,
        priority TEXT NOT NULL,
        seq BIGINT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        worker TEXT,
        token TEXT,
        result TEXT,
        error TEXT,
        created_at BIGINT NOT NULL,
        finished_at BIGINT,
        parent UUID,
        retry_of UUID
    );
    CREATE UNIQUE INDEX jobs_row ON jobs (row_id);
    CREATE INDEX jobs_unfinished ON jobs (seq) WHERE state IN ('queued', 'running');
    CREATE INDEX jobs_parent ON jobs (parent, row_id) WHERE parent IS NOT NULL;
    CREATE INDEX jobs_retry_of ON jobs (retry_of) WHERE retry_of IS NOT NULL;
    CREATE INDEX jobs_state ON jobs (state, row_id);
    CREATE INDEX jobs_kind ON jobs (kind, row_id);
    CREATE INDEX jobs_worker ON jobs (worker, row_id) WHERE worker IS NOT NULL;
    CREATE INDEX jobs_priority ON jobs (priority, row_id);
    CREATE INDEX jobs_created ON jobs (created_at, row_id);
    CREATE TABLE transitions (
        n BIGSERIAL PRIMARY KEY,
        job_id UUID NOT NULL,
        at BIGINT NOT NULL,
        state TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        worker TEXT,
        detail TEXT
    );
    CREATE INDEX transitions_job ON transitions (job_id, n);",
    ),
    (
        2,
        "live configuration versions",
        "CREATE TABLE config_versions (
        version BIGINT PRIMARY KEY,
        doc TEXT NOT NULL,
        at BIGINT NOT NULL
    );",
    ),
    (
        3,
        "mining sources, blocks and tallies",
        "CREATE TABLE sources (
        id TEXT PRIMARY KEY,
        spec TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        job TEXT
    );
    CREATE TABLE blocks (
        n BIGSERIAL PRIMARY KEY,
        source TEXT NOT NULL,
        height BIGINT NOT NULL,
        hash TEXT NOT NULL,
        participant TEXT NOT NULL,
        accepted BOOLEAN NOT NULL,
        reason TEXT,
        at BIGINT NOT NULL
    );
    CREATE INDEX blocks_at ON blocks (at);
    CREATE TABLE participants (
        name TEXT NOT NULL,
        kind TEXT NOT NULL,
        source TEXT NOT NULL,
        valid BIGINT NOT NULL,
        invalid BIGINT NOT NULL,
        stale BIGINT NOT NULL,
        blocks BIGINT NOT NULL,
        seen_at BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (name, kind)
    );",
    ),
    (
        4,
        "the leader's epoch, which fences the engine's writes",
        "CREATE TABLE faena_leader (
        id SMALLINT PRIMARY KEY DEFAULT 1 CHECK (id = 1),
        epoch BIGINT NOT NULL,
        holder TEXT,
        expires_at BIGINT
    );
    INSERT INTO faena_leader (id, epoch) VALUES (1, 0);
    -- Holds the leader's row shared for the caller's transaction, and
    -- fails it (SQLSTATE FA001) unless the epoch is still the store's.
    CREATE FUNCTION faena_fence(e BIGINT) RETURNS VOID LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM 1 FROM faena_leader WHERE id = 1 AND epoch = e FOR SHARE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'epoch % no longer leads this store', e USING ERRCODE = 'FA001';
        END IF;
    END
    $$;",
    ),
    (
        5,
        "the listing's filter indexes: top-level jobs, and kind with state",
        // `GET /api/jobs` lists top-level jobs (`parent IS NULL`); a mining
        // job's units are listed by their parent (`jobs_parent`) and need
        // no room in the filter indexes. `jobs_created` stays whole: the
        // `since` bound is looked up over every job (until migration 11).
        "DROP INDEX jobs_state, jobs_kind, jobs_worker, jobs_priority;
    CREATE INDEX jobs_state ON jobs (state, row_id) WHERE parent IS NULL;
    CREATE INDEX jobs_kind ON jobs (kind, row_id) WHERE parent IS NULL;
    CREATE INDEX jobs_worker ON jobs (worker, row_id) WHERE worker IS NOT NULL AND parent IS NULL;
    CREATE INDEX jobs_priority ON jobs (priority, row_id) WHERE parent IS NULL;
    -- The pair a dashboard filters by most (failed ai.query jobs): read
    -- as one range, newest first. Without it the planner, taking kind and
    -- state as independent, walked every job for a rare pair.
    CREATE INDEX jobs_kind_state ON jobs (kind, state, row_id) WHERE parent IS NULL;",
    ),
    (
        6,
        "each history row names the epoch of the leader that wrote it; the lease names its master",
        // Which master wrote what, after a takeover: a deposed leader's
        // rows all come before the new leader's (the failover drills
        // check it). Null when written without a fence (one master).
        // The lease's `name` lets a master started again on the same
        // address take its own lease back without waiting it out.
        "ALTER TABLE transitions ADD COLUMN epoch BIGINT;
    ALTER TABLE faena_leader ADD COLUMN name TEXT;",
    ),
    (
        7,
        "delayed and waiting jobs, their options, unique keys, groups' limits and schedules",
        // A job's options (JSON, null when it asks for nothing), the time
        // a scheduled job queues, and the schedule that fired it (listed
        // by it). Unfinished now counts scheduled and waiting jobs: the
        // start-up read walks that index. A unique key is one row, so the
        // store itself holds one job per key.
        "ALTER TABLE jobs ADD COLUMN opts TEXT, ADD COLUMN run_at BIGINT, ADD COLUMN schedule TEXT;
    DROP INDEX jobs_unfinished;
    CREATE INDEX jobs_unfinished ON jobs (seq) WHERE state IN ('queued', 'running', 'scheduled', 'waiting');
    CREATE INDEX jobs_schedule ON jobs (schedule, row_id) WHERE schedule IS NOT NULL AND parent IS NULL;
    CREATE TABLE unique_keys (
        key TEXT PRIMARY KEY,
        job UUID NOT NULL,
        until_ms BIGINT
    );
    CREATE INDEX unique_keys_until ON unique_keys (until_ms) WHERE until_ms IS NOT NULL;
    CREATE TABLE named (
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        doc TEXT NOT NULL,
        PRIMARY KEY (kind, name)
    );
    CREATE TABLE schedule_firings (
        name TEXT PRIMARY KEY,
        at_ms BIGINT NOT NULL,
        job UUID
    );",
    ),
    (
        8,
        "dispatch rewrites no index: the listing's state and worker are derived columns, the open states as one",
        // A job's row is written three times: stored, dispatched, ended.
        // The dispatch changed `state` and `worker`, both indexed, so its
        // new row version went into every index (B-tree inserts were 55 %
        // of the writer's backend time, `perf` in BENCHMARKS.md). The
        // indexes now key on columns the server derives: `listed_state` is
        // 'open' for every unfinished state and the state itself once the
        // job ended; `listed_worker` is the worker once it ended. The dispatch (and a
        // requeue) changes neither, so it is a heap-only update when the
        // page has room: fillfactor 50 leaves it. The listing reads an
        // unfinished state or a running job's worker among the open jobs
        // (`list.rs`). The history's serial key had no reader: a job's
        // history is read and deleted by (job_id, n).
        "ALTER TABLE jobs SET (fillfactor = 50),
        ADD COLUMN listed_state TEXT GENERATED ALWAYS AS
            (CASE WHEN state IN ('queued', 'running', 'scheduled', 'waiting') THEN 'open' ELSE state END) STORED,
        ADD COLUMN listed_worker TEXT GENERATED ALWAYS AS
            (CASE WHEN state IN ('queued', 'running', 'scheduled', 'waiting') THEN NULL ELSE worker END) STORED;
    DROP INDEX jobs_unfinished, jobs_state, jobs_worker, jobs_kind_state;
    CREATE INDEX jobs_unfinished ON jobs (seq) WHERE listed_state = 'open';
    CREATE INDEX jobs_state ON jobs (listed_state, row_id) WHERE parent IS NULL;
    CREATE INDEX jobs_worker ON jobs (listed_worker, row_id) WHERE listed_worker IS NOT NULL AND parent IS NULL;
    CREATE INDEX jobs_kind_state ON jobs (kind, listed_state, row_id) WHERE parent IS NULL;
    ALTER TABLE transitions DROP CONSTRAINT transitions_pkey;",
    ),
    (
        9,
        "priority changes found by job",
        // A restart counts each unfinished job's priority changes
        // (`read.rs`) from this small index, not from every job's history.
        // The pattern is `contract::PRIORITY_DETAIL_LIKE`.
        "CREATE INDEX transitions_priority ON transitions (job_id) WHERE detail LIKE 'priority % (was %)';",
    ),
    (
        10,
        "each writer's last committed group, asked about when a COMMIT goes unanswered",
        // A row a writer (a master's run) upserts in each group's
        // transaction (`write.rs`): whether a group whose COMMIT's answer
        // was lost is stored is read here, not from its transaction id,
        // which a promoted standby may have given to another transaction.
        "CREATE TABLE faena_writer_groups (writer UUID PRIMARY KEY, seq BIGINT NOT NULL, at_ms BIGINT NOT NULL);",
    ),
    (
        11,
        "jobs by their time without an index of it: a search over row ids",
        // Jobs are stored in `created_at` order (the writer never stores a
        // job as created before the one ahead of it; a copied job keeps
        // its row id and its time), so the first job of a `since=` window
        // (the listing) or past an age (retention) is a binary search over
        // row ids, each step a look-up of `jobs_row`. `jobs_created` cost
        // every job two index entries (stored, ended): about a sixth of
        // the writer's batch figure (BENCHMARKS.md). The SQLite store does
        // the same (`created.rs`).
        "DROP INDEX jobs_created;
    CREATE FUNCTION faena_first_row_since(since BIGINT) RETURNS BIGINT LANGUAGE plpgsql STABLE
    -- Its look-ups planned once per session, not at each step (the
    -- readers' connections plan every statement anew: 3 ms a search).
    SET plan_cache_mode = force_generic_plan AS $$
    DECLARE
        lo BIGINT; hi BIGINT; first BIGINT; mid BIGINT; r BIGINT; t BIGINT;
    BEGIN
        SELECT row_id, created_at INTO lo, t FROM jobs ORDER BY row_id LIMIT 1;
        IF NOT FOUND THEN RETURN NULL; END IF;
        IF t >= since THEN RETURN lo; END IF;
        SELECT row_id, created_at INTO hi, t FROM jobs ORDER BY row_id DESC LIMIT 1;
        IF t < since THEN RETURN NULL; END IF;
        -- The answer is after `lo` and at or before `first`, the first row
        -- known to be in the window; no row lies from `hi` to before it.
        first := hi;
        WHILE hi - lo > 1 LOOP
            mid := lo + (hi - lo) / 2;
            SELECT row_id, created_at INTO r, t FROM jobs WHERE row_id >= mid ORDER BY row_id LIMIT 1;
            IF r < hi AND t >= since THEN
                hi := r; first := r;
            ELSIF r < hi THEN
                lo := r;
            ELSE
                hi := mid;
            END IF;
        END LOOP;
        RETURN first;
    END
    $$;",
    ),
    (
        12,
        "statistics of columns that go together",
        // The planner takes columns as unrelated unless told. A kind's page
        // reads the jobs without a parent, and a mining job's units are
        // rows of its kind: it put ten times as many rows on such a page
        // as there are (48,000 for 5,000 on the list bench's million). An
        // open job's state is one of four: it put one row on the page of
        // the queued jobs where there were 910, and sorted every open job
        // instead of reading the newest 50 off `jobs_state` (2.8 ms
        // against 0.4). Statistics of each pair together give the counts.
        "CREATE STATISTICS jobs_kind_parent (mcv) ON kind, parent FROM jobs;
    CREATE STATISTICS jobs_state_listed (mcv) ON state, listed_state FROM jobs;
    ANALYZE jobs;",
    ),
];

/// The newest schema version this build knows: the last migration's.
pub(crate) const LATEST: i32 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// Applies the migrations the store lacks; refuses a store newer than
/// this build.
pub(crate) async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK]).await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS faena_schema (
            version INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
        )",
    )
    .await?;
    let current: i32 = tx.query_one("SELECT coalesce(max(version), 0) FROM faena_schema", &[]).await?.try_get(0)?;
    if current > LATEST {
        return Err(StoreError::Schema { found: current, known: LATEST });
    }
    for (version, name, sql) in MIGRATIONS.iter().filter(|(v, _, _)| *v > current) {
        tx.batch_execute(sql).await?;
        tx.execute("INSERT INTO faena_schema (version, name) VALUES ($1, $2)", &[version, name]).await?;
        tracing::info!(version, name, "store schema migrated");
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn migrations_are_numbered_one_by_one_and_the_latest_is_the_last() {
        for (i, (version, _, _)) in super::MIGRATIONS.iter().enumerate() {
            assert_eq!(*version, i as i32 + 1);
        }
        assert_eq!(super::LATEST, super::MIGRATIONS.len() as i32);
    }
}
