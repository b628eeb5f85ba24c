//! The state directory: created private to its owner, and locked so that one `bulk` at a time
//! runs on it.

use std::fs::File;
use std::path::Path;

use super::JournalError;

/// Creates the state directory when missing, readable by its owner only (mode 0700): the
/// journal holds phone numbers and names. An existing directory keeps its mode.
pub(super) fn create_state_dir(state_dir: &Path) -> Result<(), JournalError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(state_dir)
        .map_err(|source| JournalError::StateDir {
            path: state_dir.display().to_string(),
            source,
        })?;
    // Once per process: the lock and the journal both make sure the directory exists.
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    #[cfg(unix)]
    if let Ok(metadata) = std::fs::metadata(state_dir)
        && !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed)
    {
        use std::os::unix::fs::PermissionsExt as _;
        if metadata.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                state_dir = %state_dir.display(),
                "the state directory can be read by other users; its journal files are kept \
                 readable by their owner only, but `chmod 700` the directory too"
            );
        }
    }
    Ok(())
}

/// Makes the journal's files (`journal.sqlite` and its `-wal`, `-shm`) readable by their owner
/// only, creating the database file so: they hold phones and names, and SQLite creates the
/// `-wal` and `-shm` files with the database file's mode.
pub(super) fn private_journal_files(journal: &Path) -> Result<(), JournalError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        let fail = |source| JournalError::StateDir {
            path: journal.display().to_string(),
            source,
        };
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(journal)
            .map_err(fail)?;
        for suffix in ["", "-wal", "-shm"] {
            let mut name = journal.as_os_str().to_owned();
            name.push(suffix);
            let path = std::path::PathBuf::from(name);
            if let Ok(metadata) = std::fs::symlink_metadata(&path)
                && metadata.is_file()
                && metadata.permissions().mode() & 0o077 != 0
            {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .map_err(fail)?;
            }
        }
    }
    Ok(())
}

/// Holds the state directory's lock for as long as it lives; the OS releases it when the
/// process dies, so a killed run never leaves a stale lock behind.
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

/// Takes the lock of `state_dir` or fails at once when another process holds it.
pub fn lock(state_dir: &Path) -> Result<FileLock, JournalError> {
    create_state_dir(state_dir)?;
    let lock_path = state_dir.join("bulk.lock");
    let mut options = File::options();
    options.create(true).truncate(false).write(true);
    // Never through a symlink someone planted in the state directory.
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.custom_flags(libc::O_NOFOLLOW).mode(0o600);
    }
    let file = options
        .open(&lock_path)
        .map_err(|source| JournalError::StateDir {
            path: lock_path.display().to_string(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(FileLock { _file: file }),
        Err(std::fs::TryLockError::WouldBlock) => Err(JournalError::Locked {
            path: state_dir.display().to_string(),
            lock: lock_path.display().to_string(),
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(JournalError::StateDir {
            path: lock_path.display().to_string(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_new_state_dir_is_private_to_its_owner() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let _lock = lock(&state).unwrap();
        let mode = std::fs::metadata(&state).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[tokio::test]
    async fn the_lock_is_exclusive_and_released_with_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock(dir.path()).unwrap();
        assert!(matches!(lock(dir.path()), Err(JournalError::Locked { .. })));
        drop(held);
        lock(dir.path()).unwrap();
    }
}
