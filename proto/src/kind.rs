//! Job kinds: the four built into this build, and custom kinds (`x.<name>`)
//! that workers in any language may offer and the master only routes.
//!
//! A kind is `Copy` however it is spelled: a custom kind's name is interned
//! once per process. The number of distinct custom kinds a process accepts is
//! capped ([`MAX_CUSTOM_KINDS`]), which bounds that memory and the cardinality
//! of every metric labelled by kind. Of those, at most
//! [`MAX_UNOFFERED_KINDS`] may be named first by anyone but a worker offering
//! them (a client's job for a kind no worker has offered yet), and one
//! counts there only until a worker offers it: so clients making up names
//! cannot use up the namespace, and a worker that joins with a new kind
//! always can.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::WireError;

/// Prefix every custom kind carries.
pub const CUSTOM_PREFIX: &str = "x.";
/// Longest custom kind, prefix included.
pub const MAX_KIND_LEN: usize = 64;
/// Distinct custom kinds one process takes before it refuses new ones.
pub const MAX_CUSTOM_KINDS: usize = 4096;
/// Of those, kinds no worker has offered (named by clients' jobs).
pub const MAX_UNOFFERED_KINDS: usize = 1024;

/// Who names a custom kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namer {
    /// A worker offering it when it registers.
    Worker,
    /// Anyone else: a client's job, a stored job, a message.
    Other,
}

/// Every kind of job. Matching on it is exhaustive, so a new built-in kind
/// breaks the build until every handler covers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobKind {
    Noop,
    RandomxHash,
    RandomxMine,
    AiQuery,
    /// `x.<name>`: params and output are opaque JSON the master never reads.
    Custom(CustomKind),
}

/// An interned, validated custom kind name (`x.wordcount`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CustomKind(&'static str);

impl CustomKind {
    /// Checks the name rules and interns it: `x.` then 1 to 62 of `a-z`,
    /// `0-9`, `_`, `-` and `.`, starting with a letter, with no empty dotted
    /// segment and no trailing `.` or `-`.
    pub fn parse(s: &str) -> Result<Self, WireError> {
        Self::named(s, Namer::Other)
    }

    /// [`CustomKind::parse`], named by `by`.
    pub fn named(s: &str, by: Namer) -> Result<Self, WireError> {
        let bad = |why: &str| WireError::Params(format!("custom kind {s:?} {why}"));
        let Some(name) = s.strip_prefix(CUSTOM_PREFIX) else {
            return Err(bad("must start with \"x.\""));
        };
        if name.is_empty() || s.len() > MAX_KIND_LEN {
            return Err(bad(&format!("must have a name of 1 to {} characters after \"x.\"", MAX_KIND_LEN - 2)));
        }
        if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
            return Err(bad("must start with a lowercase letter after \"x.\""));
        }
        if let Some(c) = name.chars().find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '_' | '-' | '.')) {
            return Err(bad(&format!("has {c:?}: use a-z, 0-9, '_', '-' and '.'")));
        }
        if name.split('.').any(str::is_empty) || name.ends_with('-') {
            return Err(bad("has an empty segment or ends in '.' or '-'"));
        }
        intern(s, by).map(CustomKind)
    }

    pub fn as_str(self) -> &'static str {
        self.0
    }
}

/// Every name interned, and whether a worker has offered it.
#[derive(Debug, Default)]
struct Names {
    all: HashMap<&'static str, bool>,
    unoffered: usize,
}

fn intern(s: &str, by: Namer) -> Result<&'static str, WireError> {
    static NAMES: OnceLock<Mutex<Names>> = OnceLock::new();
    let mut names = NAMES.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    intern_in(&mut names, s, by, (MAX_CUSTOM_KINDS, MAX_UNOFFERED_KINDS))
}

fn intern_in(
    names: &mut Names,
    s: &str,
    by: Namer,
    (cap, unoffered_cap): (usize, usize),
) -> Result<&'static str, WireError> {
    if let Some((known, offered)) = names.all.get_key_value(s).map(|(k, o)| (*k, *o)) {
        if by == Namer::Worker && !offered {
            names.all.insert(known, true);
            names.unoffered -= 1;
        }
        return Ok(known);
    }
    if names.all.len() >= cap {
        return Err(WireError::Params(format!(
            "custom kind {s:?} refused: this process already knows {cap} custom kinds"
        )));
    }
    if by == Namer::Other && names.unoffered >= unoffered_cap {
        return Err(WireError::Params(format!(
            "custom kind {s:?} refused: no worker offers it, and {unoffered_cap} kinds no worker offers are known \
             already; start a worker that offers it first"
        )));
    }
    // Leaked on purpose: at most MAX_CUSTOM_KINDS names of MAX_KIND_LEN bytes.
    let name: &'static str = Box::leak(s.to_owned().into_boxed_str());
    names.all.insert(name, by == Namer::Worker);
    if by == Namer::Other {
        names.unoffered += 1;
    }
    Ok(name)
}

impl JobKind {
    /// The kinds built into this build.
    pub const ALL: [JobKind; 4] = [JobKind::Noop, JobKind::RandomxHash, JobKind::RandomxMine, JobKind::AiQuery];

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Noop => "noop",
            JobKind::RandomxHash => "randomx.hash",
            JobKind::RandomxMine => "randomx.mine",
            JobKind::AiQuery => "ai.query",
            JobKind::Custom(c) => c.as_str(),
        }
    }

    pub fn parse(s: &str) -> Result<Self, WireError> {
        Self::named(s, Namer::Other)
    }

    /// A kind a registering worker offers: a new custom one is always
    /// taken while the process has room for any.
    pub fn offered(s: &str) -> Result<Self, WireError> {
        Self::named(s, Namer::Worker)
    }

    fn named(s: &str, by: Namer) -> Result<Self, WireError> {
        if s.starts_with(CUSTOM_PREFIX) {
            return CustomKind::named(s, by).map(JobKind::Custom);
        }
        Self::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            let known: Vec<&str> = Self::ALL.iter().map(|k| k.as_str()).collect();
            WireError::Params(format!(
                "unknown job kind {s:?} (known: {}, or x.<name> for a custom kind)",
                known.join(", ")
            ))
        })
    }
}

impl std::fmt::Display for JobKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for JobKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for JobKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        JobKind::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_kind_names() {
        for ok in ["x.wordcount", "x.a", "x.img.resize-v2", "x.ocr_fast", &format!("x.{}", "a".repeat(62))] {
            let k = JobKind::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert_eq!(k.as_str(), ok);
            assert!(matches!(k, JobKind::Custom(_)));
            assert_eq!(JobKind::parse(ok).ok(), Some(k), "interned once");
        }
        for bad in [
            "x.",
            "x",
            "y.thing",
            "x.Upper",
            "x.1abc",
            "x.a..b",
            "x.a.",
            "x.a-",
            "x.sp ace",
            "x.é",
            "x.a/b",
            "x.a+",
            &format!("x.{}", "a".repeat(63)),
        ] {
            let e = JobKind::parse(bad).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains(&format!("{bad:?}")), "{bad} accepted or unclear: {e}");
        }
    }

    #[test]
    fn distinct_custom_kinds_are_capped() {
        let mut names = Names::default();
        let caps = (3, 2);
        let other = |names: &mut Names, s| intern_in(names, s, Namer::Other, caps);
        assert!(other(&mut names, "x.a").is_ok() && other(&mut names, "x.b").is_ok());
        assert!(other(&mut names, "x.a").is_ok(), "a known name is always taken");
        let e = other(&mut names, "x.c").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("no worker offers it"), "clients' made-up names are capped apart: {e}");
        assert!(intern_in(&mut names, "x.w", Namer::Worker, caps).is_ok(), "a worker's new kind still gets in");
        // A worker offering a client's kind frees its place among the unoffered.
        assert!(intern_in(&mut names, "x.a", Namer::Worker, caps).is_ok());
        assert_eq!(names.unoffered, 1);
        let e = intern_in(&mut names, "x.z", Namer::Worker, caps).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("already knows 3 custom kinds"), "{e}");
    }

    #[test]
    fn serde_round_trip() {
        for k in [JobKind::AiQuery, JobKind::parse("x.serde").expect("valid")] {
            let json = serde_json::to_string(&k).expect("ser");
            assert_eq!(json, format!("\"{}\"", k.as_str()));
            assert_eq!(serde_json::from_str::<JobKind>(&json).ok(), Some(k));
        }
        assert!(serde_json::from_str::<JobKind>("\"bitcoin\"").is_err());
        assert!(serde_json::from_str::<JobKind>("7").is_err());
    }
}
