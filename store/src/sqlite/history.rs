//! A commit group's history rows, written together just before it
//! commits. One multi-row `INSERT` takes up to 64 rows: the statement runs
//! once (its cursors opened, its transaction checked, it is reset) where
//! each row was a statement of its own, three a job. Nothing reads the
//! history inside a group, and the rows keep their order, so what commits
//! is what one row at a time committed.

use std::borrow::Cow;
use std::sync::Arc;

use faena_proto::ids::JobId;
use rusqlite::ToSql;
use rusqlite::types::{ToSqlOutput, ValueRef};

use super::generations::{Gen, HISTORY_COLUMNS};
use super::write::Held;
use crate::StoreError;

/// The row counts a statement is prepared for: a run of rows goes in the
/// largest that fits, so a table needs at most four statements.
pub(crate) const CHUNKS: [usize; 4] = [64, 16, 4, 1];

/// The statements that insert each of [`CHUNKS`] rows into `history`.
pub(crate) fn statements(history: &str) -> [String; CHUNKS.len()] {
    CHUNKS.map(|n| {
        let row = "(?, ?, ?, ?, ?, ?)";
        let rows = vec![row; n].join(", ");
        format!("INSERT INTO {history} ({HISTORY_COLUMNS}) VALUES {rows}")
    })
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

/// One history row: a job's change, borrowed from the group's changes.
pub(crate) struct Row<'a> {
    pub id: IdText,
    pub at: i64,
    pub state: &'a str,
    pub attempt: u32,
    pub worker: Option<&'a str>,
    pub detail: Option<Cow<'a, str>>,
}

/// The rows a group made so far, each with the generation it goes to.
#[derive(Default)]
pub(crate) struct History<'a> {
    rows: Vec<(Arc<Gen>, Row<'a>)>,
}

impl<'a> History<'a> {
    pub(crate) fn push(&mut self, g: &Arc<Gen>, row: Row<'a>) {
        self.rows.push((g.clone(), row));
    }

    /// Inserts the rows, in order, and forgets them.
    pub(crate) fn write(&mut self, held: &mut Held<'_>) -> Result<(), StoreError> {
        for mut run in self.rows.chunk_by(|(a, _), (b, _)| a.id == b.id) {
            let g = &run[0].0;
            while !run.is_empty() {
                let (i, n) =
                    CHUNKS.iter().copied().enumerate().find(|(_, n)| *n <= run.len()).unwrap_or((CHUNKS.len() - 1, 1));
                let (chunk, more) = run.split_at(n);
                let mut args: Vec<&dyn ToSql> = Vec::with_capacity(n * 6);
                for (_, r) in chunk {
                    args.extend([&r.id as &dyn ToSql, &r.at, &r.state, &r.attempt, &r.worker, &r.detail]);
                }
                held.get(&g.records[i])?.execute(&*args)?;
                run = more;
            }
        }
        self.rows.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::*;
    use crate::sqlite::generations::Layout;

    /// Rows go in the order they came, through every chunk size and a
    /// run longer than the largest.
    #[test]
    fn rows_go_in_order_through_every_chunk_size() {
        let conn = Connection::open_in_memory().expect("in memory");
        let g = Layout::open(&conn, 0).expect("layout").newest().clone();
        let n = 64 + 64 + 16 + 4 + 1 + 2;
        let details: Vec<String> = (0..n).map(|i| format!("row {i}")).collect();
        let jobs: Vec<JobId> = (0..7).map(|_| JobId::new()).collect();
        let mut history = History::default();
        for (i, detail) in details.iter().enumerate() {
            let worker = (i % 2 == 0).then_some("w1");
            let row = Row {
                id: IdText::from(jobs[i % 7]),
                at: i as i64,
                state: "queued",
                attempt: 1,
                worker,
                detail: Some(Cow::Borrowed(detail)),
            };
            history.push(&g, row);
        }
        history.write(&mut Held::new(&conn)).expect("writes");
        assert!(history.rows.is_empty(), "written rows are forgotten");
        let mut stmt =
            conn.prepare("SELECT job_id, at, worker, detail FROM transitions ORDER BY rowid").expect("reads");
        let rows: Vec<(String, i64, Option<String>, String)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("rows");
        let expected: Vec<_> = (0..n)
            .map(|i| (jobs[i % 7].to_string(), i as i64, (i % 2 == 0).then(|| "w1".to_owned()), format!("row {i}")))
            .collect();
        assert_eq!(rows, expected, "each row's job id is the text of its id");
    }
}
