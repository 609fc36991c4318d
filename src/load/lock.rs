//! One writer per destination: a second run on the same DuckDB file or
//! Parquet directory fails at once instead of racing the first one.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use super::LoadError;

/// An exclusive advisory lock on a file next to the destination, held until
/// dropped (the OS releases it if the process dies).
#[derive(Debug)]
pub struct DestinationLock {
    _file: File,
}

impl DestinationLock {
    /// Takes the lock or fails at once, naming the lock file.
    pub fn acquire(path: &Path) -> Result<Self, LoadError> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| LoadError::Io {
                action: "open the lock file".into(),
                path: path.to_path_buf(),
                source: e,
            })?;
        match file.try_lock() {
            Ok(()) => Ok(DestinationLock { _file: file }),
            Err(TryLockError::WouldBlock) => Err(LoadError::Busy {
                lock: PathBuf::from(path),
            }),
            Err(TryLockError::Error(e)) => Err(LoadError::Io {
                action: "lock".into(),
                path: path.to_path_buf(),
                source: e,
            }),
        }
    }
}
