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
use serde::Deserialize;
#[cfg(test)]
use serde::Serialize;

use crate::contract::Transition;

/// One change in a trail: a line of JSON.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
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
    /// newline inside), the bytes serde_json writes for a [`Step`], made
    /// without its serializer: on every insert and update the writer makes
    /// one, and serde's field-by-field path was a twentieth of its work.
    pub(crate) fn step(
        mut self,
        at: i64,
        state: &str,
        attempt: u32,
        worker: Option<&str>,
        detail: Option<&str>,
    ) -> Self {
        let line = &mut self.0;
        line.extend_from_slice(b"{\"at\":");
        line.extend_from_slice(itoa::Buffer::new().format(at).as_bytes());
        line.extend_from_slice(b",\"state\":");
        json_string(line, state);
        line.extend_from_slice(b",\"attempt\":");
        line.extend_from_slice(itoa::Buffer::new().format(attempt).as_bytes());
        if let Some(worker) = worker {
            line.extend_from_slice(b",\"worker\":");
            json_string(line, worker);
        }
        if let Some(detail) = detail {
            line.extend_from_slice(b",\"detail\":");
            json_string(line, detail);
        }
        line.extend_from_slice(b"}\n");
        self
    }
}

/// `s` as a JSON string, as serde_json writes it: as it is between quotes
/// when nothing in it needs escaping (serde_json escapes only control
/// characters, `"` and `\\`), else by serde_json.
fn json_string(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else if serde_json::to_writer(&mut *out, s).is_err() {
        // Into a Vec, a string: serde_json cannot fail.
        out.extend_from_slice(b"\"\"");
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

#[cfg(test)]
mod tests {
    use std::borrow::Cow::Borrowed;

    use super::*;

    /// What serde_json makes of the same change: the line the trail wrote
    /// before, which readers (and `count_priority_changes`) expect.
    fn by_serde(at: i64, state: &str, attempt: u32, worker: Option<&str>, detail: Option<&str>) -> Vec<u8> {
        let step =
            Step { at, state: Borrowed(state), attempt, worker: worker.map(Borrowed), detail: detail.map(Borrowed) };
        let mut line = serde_json::to_vec(&step).expect("serialises");
        line.push(b'\n');
        line
    }

    #[test]
    fn a_step_is_the_line_serde_json_writes() {
        let awkward = [
            "",
            "running",
            "w-01",
            "priority normal → high",
            "quote \" and backslash \\ inside",
            "new\nline, tab\t, bell\u{7}, nul\u{0}, del\u{7f}",
            "é 日本 🚀",
            "</script>",
        ];
        for text in awkward {
            for (worker, detail) in [(None, None), (Some(text), None), (None, Some(text)), (Some("w"), Some(text))] {
                for (at, attempt) in [(0, 0), (1_795_927_694_157, 3), (i64::MIN, u32::MAX), (-1, 1)] {
                    let made = Trail::default().step(at, text, attempt, worker, detail);
                    assert_eq!(
                        String::from_utf8_lossy(&made.0),
                        String::from_utf8_lossy(&by_serde(at, text, attempt, worker, detail)),
                        "{text:?} {worker:?} {detail:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn steps_read_back_what_step_wrote() {
        let trail = Trail::default()
            .step(1, "queued", 0, None, Some("line\nbreak \"quoted\""))
            .step(2, "running", 1, Some("w1"), None)
            .step(3, "succeeded", 1, Some("w1"), None);
        let text = String::from_utf8(trail.0).expect("utf-8");
        assert_eq!(text.lines().count(), 3, "one line a change");
        let read = steps(&text).expect("parses");
        assert_eq!(read.len(), 3);
        assert_eq!((read[0].at_ms, read[0].state.as_str(), read[0].attempt), (1, "queued", 0));
        assert_eq!(read[0].detail.as_deref(), Some("line\nbreak \"quoted\""));
        assert_eq!((read[2].state.as_str(), read[2].worker.as_deref()), ("succeeded", Some("w1")));
    }
}
