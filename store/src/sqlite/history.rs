//! A job's history as the SQLite store keeps it: in its own row, one line
//! of JSON a change (`trail`), appended by the statement that makes the
//! change. A row in a table of its own for each change (a job's `queued`,
//! `running` and `succeeded`), with an index entry each, was about a fifth
//! of the writer's work; appended to the row the change rewrites anyway,
//! it is a few bytes more of that row. Jobs stored before keep the rows
//! they have in the generation's history table, and their later changes
//! go to their trail: a job's history is its table rows, then its trail.

use faena_proto::ids::JobId;
use rusqlite::ToSql;
use rusqlite::types::{ToSqlOutput, ValueRef};
use serde::{Deserialize, Serialize};

use crate::contract::Transition;

/// One change in a trail: a line of JSON.
#[derive(Serialize, Deserialize)]
struct Step<'a> {
    at: i64,
    #[serde(borrow)]
    state: std::borrow::Cow<'a, str>,
    attempt: u32,
    #[serde(borrow, skip_serializing_if = "Option::is_none", default)]
    worker: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, skip_serializing_if = "Option::is_none", default)]
    detail: Option<std::borrow::Cow<'a, str>>,
}

/// The changes a statement appends to a job's trail, as it binds them.
pub(crate) struct Trail(Vec<u8>);

impl Default for Trail {
    /// Room for two changes (a job dispatched as it is stored) without
    /// growing: a change is about a hundred bytes.
    fn default() -> Self {
        Self(Vec::with_capacity(256))
    }
}

impl Trail {
    /// Adds a change: a line of JSON (its strings escaped, so never a bare
    /// newline inside).
    pub(crate) fn step(
        mut self,
        at: i64,
        state: &str,
        attempt: u32,
        worker: Option<&str>,
        detail: Option<&str>,
    ) -> Self {
        use std::borrow::Cow::Borrowed;
        let step =
            Step { at, state: Borrowed(state), attempt, worker: worker.map(Borrowed), detail: detail.map(Borrowed) };
        // Into a Vec, of a struct with no map: serde_json cannot fail.
        if serde_json::to_writer(&mut self.0, &step).is_ok() {
            self.0.push(b'\n');
        }
        self
    }
}

impl ToSql for Trail {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(ValueRef::Text(&self.0)))
    }
}

/// The SQL that counts the changes in the trails of `jobs` (a generation's
/// jobs table): each is a line.
pub(crate) fn count_steps(jobs: &str) -> String {
    format!("SELECT coalesce(sum(length(trail) - length(replace(trail, char(10), ''))), 0) FROM {jobs}")
}

/// The SQL that counts the priority changes in a job row's trail: the
/// lines whose detail is one, parsed only where the trail has the text
/// ([`Step`] writes `"detail":"…"` with no space).
pub(crate) fn count_priority_changes() -> String {
    use crate::contract::PRIORITY_DETAIL_LIKE;
    format!(
        "CASE WHEN instr(trail, '\"detail\":\"priority ') = 0 THEN 0 ELSE
            (SELECT count(*) FROM json_each('[' || replace(rtrim(trail, char(10)), char(10), ',') || ']')
                WHERE json_extract(value, '$.detail') LIKE '{PRIORITY_DETAIL_LIKE}') END"
    )
}

/// The changes in a trail, in order; a line that does not parse is an
/// error (the store wrote every line).
pub(crate) fn steps(trail: &str) -> Result<Vec<Transition>, serde_json::Error> {
    trail
        .lines()
        .map(|line| {
            let s: Step<'_> = serde_json::from_str(line)?;
            Ok(Transition {
                at_ms: s.at as u64,
                state: s.state.into_owned(),
                attempt: s.attempt,
                worker: s.worker.map(std::borrow::Cow::into_owned),
                detail: s.detail.map(std::borrow::Cow::into_owned),
            })
        })
        .collect()
}

/// A job id as the text the store keeps (36 characters, hyphenated, lower
/// case), made without a formatter or an allocation: the writer binds one
/// to nearly every statement.
#[derive(Clone, Copy)]
pub(crate) struct IdText([u8; 36]);

impl From<JobId> for IdText {
    fn from(id: JobId) -> Self {
        let mut text = [0; 36];
        id.0.hyphenated().encode_lower(&mut text);
        Self(text)
    }
}

impl ToSql for IdText {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(ValueRef::Text(&self.0)))
    }
}
