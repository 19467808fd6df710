//! Writing a bookmark file back, safely: the new content goes to a temporary file in the same
//! directory, is flushed to disk, and replaces the old file with one rename, so a crash or a
//! full disk leaves either the old file or the new one, never a mix. The file being replaced
//! is first copied to a snapshot next to it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// What [`write_atomic`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The file written.
    pub path: PathBuf,
    /// The copy of the file it replaced (`None` when there was no file).
    pub snapshot: Option<PathBuf>,
}

/// The snapshot path for `path` and `label`: `<dir>/.<name>.snapshots/<name>.<label>`.
pub fn snapshot_path(path: &Path, label: &str) -> io::Result<PathBuf> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let label_ok = !label.is_empty()
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !label_ok || label.starts_with('.') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a snapshot label is letters, digits, '-', '_' and '.'",
        ));
    }
    Ok(directory(path)
        .join(format!(".{name}.snapshots"))
        .join(format!("{name}.{label}")))
}

fn directory(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Replaces `path` with `bytes` atomically, keeping a snapshot of the replaced file named by
/// `label` (for example a timestamp; see [`snapshot_path`]). The file keeps its permissions.
///
/// # Errors
/// Any I/O error; the file at `path` is then unchanged and no temporary file is left.
pub fn write_atomic(path: &Path, bytes: &[u8], label: &str) -> io::Result<Written> {
    write_atomic_with(path, bytes, label, || {})
}

/// [`write_atomic`], calling `before_rename` once the new content is on disk under its
/// temporary name (the crash tests stop the process there).
///
/// # Errors
/// As [`write_atomic`].
pub fn write_atomic_with(
    path: &Path,
    bytes: &[u8],
    label: &str,
    before_rename: impl FnOnce(),
) -> io::Result<Written> {
    let dir = directory(path);
    let snapshot_target = snapshot_path(path, label)?;
    let old = match fs::metadata(path) {
        Ok(meta) if meta.is_file() => Some(meta),
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a regular file", path.display()),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let snapshot = match &old {
        Some(_) => {
            if let Some(snapshots) = snapshot_target.parent() {
                fs::create_dir_all(snapshots)?;
            }
            write_new(&snapshot_target, &fs::read(path)?)?;
            Some(snapshot_target)
        }
        None => None,
    };
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("bookmarks");
    let temp = dir.join(format!(".{name}.tmp-{}-{label}", std::process::id()));
    let result = (|| {
        write_new(&temp, bytes)?;
        if let Some(meta) = &old {
            fs::set_permissions(&temp, meta.permissions())?;
        }
        before_rename();
        fs::rename(&temp, path)?;
        // Make the rename itself durable.
        File::open(dir)?.sync_all()
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    Ok(Written {
        path: path.to_owned(),
        snapshot,
    })
}

/// Creates `path` (which must not exist), writes and flushes it.
fn write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
    let result = file.write_all(bytes).and_then(|()| file.sync_all());
    if result.is_err() {
        let _ = fs::remove_file(path);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leftovers(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect()
    }

    #[test]
    fn replaces_the_file_and_keeps_a_snapshot_of_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("Bookmarks");
        fs::write(&path, b"old").unwrap();
        let written = write_atomic(&path, b"new", "20261202T081500Z").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        let snapshot = written.snapshot.unwrap();
        assert_eq!(fs::read(&snapshot).unwrap(), b"old");
        assert_eq!(
            snapshot,
            dir.path()
                .join(".Bookmarks.snapshots")
                .join("Bookmarks.20261202T081500Z")
        );
        assert!(leftovers(dir.path()).is_empty());
        // A second write with the same label would overwrite the snapshot: refused, and the
        // file is left as it is.
        assert!(write_atomic(&path, b"newer", "20261202T081500Z").is_err());
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn a_new_file_has_no_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bookmarks.json");
        let written = write_atomic(&path, b"{}", "1").unwrap();
        assert_eq!(written.snapshot, None);
        assert_eq!(fs::read(&path).unwrap(), b"{}");
    }

    #[cfg(unix)]
    #[test]
    fn permissions_are_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bookmarks.html");
        fs::write(&path, b"old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        write_atomic(&path, b"new", "a").unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn failure_leaves_the_target_and_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // The target is a directory: refused before anything is written.
        let target = dir.path().join("Bookmarks");
        fs::create_dir(&target).unwrap();
        assert!(write_atomic(&target, b"new", "a").is_err());
        assert!(target.is_dir());
        // The directory does not exist: nothing can be written.
        let missing = dir.path().join("nowhere").join("Bookmarks");
        assert!(write_atomic(&missing, b"new", "a").is_err());
        assert!(leftovers(dir.path()).is_empty());
        // Bad labels are refused.
        let path = dir.path().join("ok");
        for label in ["", "../x", ".hidden", "a/b"] {
            assert!(write_atomic(&path, b"x", label).is_err(), "{label:?}");
        }
        assert!(!path.exists());
    }
}
