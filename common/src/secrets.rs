//! Secrets come from a flag/env value or from a file (`*_FILE`, as Docker
//! secrets are mounted). Giving both is an error rather than a silent choice.

use std::path::Path;

use faena_proto::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{name} and {name}_FILE are both set; give only one")]
    Both { name: String },
    #[error("cannot read {name}_FILE {path}: {source}")]
    Read { name: String, path: String, source: std::io::Error },
    #[error("{name} is empty")]
    Empty { name: String },
    #[error("{name} is set but {needs} is not")]
    Orphan { name: String, needs: String },
}

/// Resolves a secret; a trailing newline in the file is not part of it.
pub fn resolve(name: &str, value: Option<&str>, file: Option<&Path>) -> Result<Option<Secret>, SecretError> {
    let raw = match (value, file) {
        (Some(_), Some(_)) => return Err(SecretError::Both { name: name.into() }),
        (Some(v), None) => v.to_owned(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|source| SecretError::Read { name: name.into(), path: path.display().to_string(), source })?
            .trim_end_matches(['\n', '\r'])
            .to_owned(),
        (None, None) => return Ok(None),
    };
    if raw.is_empty() {
        return Err(SecretError::Empty { name: name.into() });
    }
    Ok(Some(Secret::new(raw)))
}

/// Like [`resolve`] for a secret that may be left out: an empty value or
/// file means "not given". Docker secrets cannot be empty, so a stack that
/// runs without, say, a Gemini key mounts a file holding only a newline.
pub fn resolve_optional(name: &str, value: Option<&str>, file: Option<&Path>) -> Result<Option<Secret>, SecretError> {
    match resolve(name, value, file) {
        Err(SecretError::Empty { .. }) => Ok(None),
        other => other,
    }
}

/// Writes a secret to a file only its owner can read — from the moment it
/// exists: created with mode 0600 (not written, then narrowed), replacing
/// any older file, whatever its mode was.
pub fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(contents.as_bytes())
}

/// Makes `path` a file only its owner may read or write: created so when
/// missing, its mode narrowed when it exists (a database holding secrets;
/// SQLite gives its -wal and -shm files the database file's mode).
pub fn ensure_private(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    drop(options.open(path)?);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_database_file_is_made_private_and_kept_whole() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("faena-private-db-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let (new, old) = (dir.join("new.db"), dir.join("old.db"));
        let _ = std::fs::remove_file(&new);
        std::fs::write(&old, "rows").expect("write");
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        for f in [&new, &old] {
            ensure_private(f).expect("private");
            let mode = std::fs::metadata(f).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", f.display());
        }
        assert_eq!(std::fs::read_to_string(&old).expect("read"), "rows", "an existing database is kept");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[cfg(unix)]
    #[test]
    fn a_private_file_is_never_readable_by_others() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("faena-private-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let file = dir.join("token");
        // An older file, readable by everyone, is replaced rather than reused.
        std::fs::write(&file, "old").expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        write_private(&file, "new").expect("writes");
        let mode = std::fs::metadata(&file).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_to_string(&file).expect("read"), "new");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn value_file_both_and_empty() {
        let dir = std::env::temp_dir().join(format!("faena-secret-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let file = dir.join("token");
        std::fs::write(&file, "s3cret\n").expect("write");
        let from_file = resolve("T", None, Some(&file)).expect("reads").expect("some");
        assert_eq!(from_file.expose(), "s3cret");
        assert_eq!(resolve("T", Some("v"), None).expect("ok").map(|s| s.expose().to_owned()).as_deref(), Some("v"));
        assert!(matches!(resolve("T", Some("v"), Some(&file)), Err(SecretError::Both { .. })));
        assert!(matches!(resolve("T", Some(""), None), Err(SecretError::Empty { .. })));
        assert!(matches!(resolve("T", None, Some(&dir.join("missing"))), Err(SecretError::Read { .. })));
        assert!(resolve("T", None, None).expect("ok").is_none());
        std::fs::write(&file, "\n").expect("write");
        assert!(matches!(resolve("T", None, Some(&file)), Err(SecretError::Empty { .. })));
        assert!(resolve_optional("T", None, Some(&file)).expect("ok").is_none());
        assert!(resolve_optional("T", Some(""), None).expect("ok").is_none());
        assert!(matches!(resolve_optional("T", Some("v"), Some(&file)), Err(SecretError::Both { .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
