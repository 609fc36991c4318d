//! The load stage: writes record batches into the destination, stream by
//! stream, and publishes a run's results atomically.

pub mod duckdb;
mod lock;
pub mod parquet;

use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;

use crate::pipeline::{DestinationSpec, WriteMode};

/// Why the destination could not be written.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A file system operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: String,
        path: PathBuf,
        source: std::io::Error,
    },
    /// DuckDB refused an operation.
    #[error("{}: cannot {context}: {source}", path.display())]
    Duckdb {
        path: PathBuf,
        context: String,
        source: ::duckdb::Error,
    },
    /// The Parquet writer failed.
    #[error("{}: cannot {context}: {source}", path.display())]
    Parquet {
        path: PathBuf,
        context: String,
        source: ::parquet::errors::ParquetError,
    },
    /// Another run holds the destination.
    #[error(
        "another lucca-sync run is writing this destination (lock held on {}); wait for it to finish",
        lock.display()
    )]
    Busy { lock: PathBuf },
    /// Internal: the working copy was already closed.
    #[error("{}: the working copy is already closed", path.display())]
    Closed { path: PathBuf },
}

/// Table of the incremental cursors (DuckDB).
pub const STATE_TABLE: &str = "_lucca_sync_state";
/// Column tagging appended rows with their run.
pub const RUN_ID_COLUMN: &str = "_lucca_sync_run_id";

/// How a completed stream is published.
#[derive(Debug, Clone)]
pub struct StreamCommit {
    /// Pipeline name (the state's key).
    pub pipeline: String,
    /// This run's id.
    pub run_id: String,
    /// Replace, append or merge.
    pub write_mode: WriteMode,
    /// Primary key columns (snake_case), for merge.
    pub primary_key: Vec<String>,
    /// The incremental cursor to store with the data: (field, value).
    pub state: Option<(String, String)>,
}

/// A run's load into one destination.
pub enum Load {
    /// Into a DuckDB file.
    Duckdb(duckdb::DuckdbLoad),
    /// Into a Parquet directory.
    Parquet(parquet::ParquetLoad),
}

impl Load {
    /// Opens the destination for a run: takes its lock and prepares the
    /// temporary space; nothing visible changes until [`Load::publish`].
    pub fn open(destination: &DestinationSpec, run_id: &str) -> Result<Self, LoadError> {
        Ok(match destination {
            DestinationSpec::Duckdb(d) => Load::Duckdb(duckdb::DuckdbLoad::open(&d.path, run_id)?),
            DestinationSpec::Parquet(p) => {
                Load::Parquet(parquet::ParquetLoad::open(&p.dir, run_id)?)
            }
        })
    }

    /// Adds a batch to a stream.
    pub fn write(&mut self, stream: &str, batch: &RecordBatch) -> Result<(), LoadError> {
        match self {
            Load::Duckdb(d) => d.write(stream, batch),
            Load::Parquet(p) => p.write(stream, batch),
        }
    }

    /// Marks a stream complete: it will be published with the run. Returns
    /// its row count.
    pub fn commit_stream(&mut self, stream: &str, commit: &StreamCommit) -> Result<u64, LoadError> {
        match self {
            Load::Duckdb(d) => d.commit_stream(stream, commit),
            Load::Parquet(p) => p.commit_stream(stream, commit),
        }
    }

    /// The stored cursor of an incremental stream, if any.
    pub fn read_state(&self, pipeline: &str, stream: &str) -> Result<Option<String>, LoadError> {
        match self {
            Load::Duckdb(d) => d.read_state(pipeline, stream),
            Load::Parquet(p) => Ok(p.read_state(pipeline, stream)),
        }
    }

    /// Drops what a failed stream wrote; its previous data stays.
    pub fn discard_stream(&mut self, stream: &str) -> Result<(), LoadError> {
        match self {
            Load::Duckdb(d) => d.discard_stream(stream),
            Load::Parquet(p) => p.discard_stream(stream),
        }
    }

    /// Makes every committed stream visible at once (DuckDB) or file by
    /// file, each file atomically (Parquet).
    pub fn publish(self) -> Result<(), LoadError> {
        match self {
            Load::Duckdb(d) => d.publish(),
            Load::Parquet(p) => p.publish(),
        }
    }

    /// Leaves the destination exactly as it was.
    pub fn abandon(self) {
        match self {
            Load::Duckdb(d) => d.abandon(),
            Load::Parquet(p) => p.abandon(),
        }
    }
}

/// Flushes a directory entry after a rename, so the rename survives a crash.
pub(crate) fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(f) = std::fs::File::open(dir)
    {
        let _ = f.sync_all();
    }
}
