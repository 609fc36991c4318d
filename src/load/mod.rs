//! The load stage: writes record batches into the destination, stream by
//! stream, and publishes a run's results atomically.

pub mod duckdb;
mod lock;
pub mod parquet;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Int64Type, TimestampMicrosecondType};
use chrono::{DateTime, Utc};

use crate::pipeline::{DestinationSpec, WriteMode};

/// A destination table's columns, each with its type as Arrow names it
/// (`None`: a type lucca-sync does not write, or a Parquet partition
/// column, which lives in directory names).
pub type TableColumns = std::collections::HashMap<String, Option<arrow::datatypes::DataType>>;

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
    /// Building Arrow data failed.
    #[error("{}: cannot {context}: {source}", path.display())]
    Arrow {
        path: PathBuf,
        context: String,
        source: arrow::error::ArrowError,
    },
    /// Another run holds the destination.
    #[error(
        "another lucca-sync run is writing this destination (lock held on {}); wait for it to finish",
        lock.display()
    )]
    Busy { lock: PathBuf },
    /// Another program holds the DuckDB file (DuckDB's own lock).
    #[error("{}: {reason}: close it and run again ({source})", path.display())]
    InUse {
        path: PathBuf,
        reason: &'static str,
        source: ::duckdb::Error,
    },
    /// An earlier DuckDB error rolled the run's working copy back.
    #[error(
        "{}: not written: an earlier error rolled this run's changes back: {reason}",
        path.display()
    )]
    Closed { path: PathBuf, reason: String },
}

/// Table of the incremental cursors (DuckDB).
pub const STATE_TABLE: &str = "_lucca_sync_state";
/// Run history: one row per stream per run (DuckDB table; Parquet `_runs/`).
pub const RUNS_TABLE: &str = "_lucca_sync_runs";
/// View of the latest run of each stream (DuckDB), for monitoring.
pub const LATEST_RUNS_VIEW: &str = "lucca_sync_latest_runs";
/// Column tagging appended rows with their run.
pub const RUN_ID_COLUMN: &str = "_lucca_sync_run_id";

/// How a completed stream is published.
#[derive(Debug, Clone, Default)]
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
    /// Description of the table (DuckDB `COMMENT ON TABLE`).
    pub table_comment: String,
    /// Descriptions of the declared columns: (column, text).
    pub column_comments: Vec<(String, String)>,
    /// Columns splitting the stream's files into Hive-style directories
    /// (Parquet).
    pub partition_by: Vec<String>,
    /// For a child table: its parent, whose merge replaces the child rows
    /// of every parent record it rewrites.
    pub parent: Option<ParentLink>,
    /// For an `append` that reads records again (an incremental stream's
    /// lookback, a sliced stream's re-read windows): what tells a version
    /// of a record. A staged row whose version the table already has is
    /// not appended again; nor are its items in the child tables.
    pub version_key: VersionKey,
}

/// How an append recognises a record version it reads again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum VersionKey {
    /// Every staged row is new.
    #[default]
    None,
    /// These columns tell a version: an incremental stream's primary key
    /// and cursor.
    Columns(Vec<String>),
    /// Every column but the run id: a sliced stream, which re-reads whole
    /// windows and has no cursor.
    WholeRow,
}

impl VersionKey {
    /// The columns to compare, given the staged table's columns; `None`
    /// when every row is new.
    pub fn columns<'a>(&self, staged: impl IntoIterator<Item = &'a String>) -> Option<Vec<String>> {
        match self {
            VersionKey::None => None,
            VersionKey::Columns(columns) => Some(columns.clone()),
            VersionKey::WholeRow => Some(
                staged
                    .into_iter()
                    .filter(|c| c.as_str() != RUN_ID_COLUMN)
                    .cloned()
                    .collect(),
            ),
        }
    }
}

/// How a child table (`users__user_work_cycles`) hangs off its parent.
#[derive(Debug, Clone)]
pub struct ParentLink {
    /// The parent's table (the stream).
    pub table: String,
    /// The parent's primary key columns.
    pub parent_key: Vec<String>,
    /// The same key in the child table (`users_id`).
    pub child_key: Vec<String>,
    /// The parent's [`StreamCommit::version_key`]: the items of a parent
    /// record read again are not appended again.
    pub parent_version_key: VersionKey,
}

impl StreamCommit {
    /// For a child table of an incremental append: its parent link, whose
    /// records read again bring no new items.
    pub fn parent_read_again(&self) -> Option<&ParentLink> {
        self.parent
            .as_ref()
            .filter(|l| l.parent_version_key != VersionKey::None)
    }

    /// The commit of one of this stream's child tables: same run and write
    /// mode, no cursor, merged by the parent's key.
    pub fn for_child(&self, stream: &str, table: &str) -> StreamCommit {
        StreamCommit {
            primary_key: Vec::new(),
            state: None,
            table_comment: format!(
                "Items of an array of objects of `{stream}`, one row per item: `{}` is the parent's key, `list_index` the item's position; loaded by lucca-sync (table {table})",
                self.primary_key
                    .iter()
                    .map(|k| format!("{stream}_{k}"))
                    .collect::<Vec<_>>()
                    .join("`, `"),
            ),
            column_comments: Vec::new(),
            partition_by: Vec::new(),
            parent: Some(ParentLink {
                table: stream.to_owned(),
                parent_key: self.primary_key.clone(),
                child_key: self
                    .primary_key
                    .iter()
                    .map(|k| format!("{stream}_{k}"))
                    .collect(),
                parent_version_key: self.version_key.clone(),
            }),
            version_key: VersionKey::None,
            ..self.clone()
        }
    }
}

/// True for the stream's own table and its child tables
/// (`{stream}__{field}`).
pub fn belongs_to_stream(table: &str, stream: &str) -> bool {
    table == stream
        || table
            .strip_prefix(stream)
            .is_some_and(|rest| rest.starts_with("__"))
}

/// One row of the run history: how one stream of one run ended.
#[derive(Debug, Clone)]
pub struct RunRecord {
    /// The run's id.
    pub run_id: String,
    /// Pipeline name.
    pub pipeline: String,
    /// Stream name.
    pub stream: String,
    /// When the stream started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
    /// `loaded`, `failed`, `forbidden` or `stopped`.
    pub status: String,
    /// Rows written to the destination by this run.
    pub rows_written: u64,
    /// Records read from the API.
    pub records_read: u64,
    /// Requests sent, retries included.
    pub requests: u64,
    /// Retried requests.
    pub retries: u64,
    /// 429 answers.
    pub throttled: u64,
    /// The count the API reported, if it did.
    pub api_count: Option<u64>,
    /// True when the API's count and the rows loaded differ.
    pub count_mismatch: bool,
    /// The error, for a stream that did not load.
    pub error: Option<String>,
}

/// The run history rows as one Arrow batch: the single definition of the
/// history's columns, written by both loaders.
pub fn run_history_batch(records: &[RunRecord]) -> Result<RecordBatch, arrow::error::ArrowError> {
    use arrow::array::{
        ArrayRef, BooleanArray, Int64Array, StringArray, TimestampMicrosecondArray,
    };
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    let text = |f: fn(&RunRecord) -> Option<&str>| -> ArrayRef {
        Arc::new(records.iter().map(f).collect::<StringArray>())
    };
    let count = |f: fn(&RunRecord) -> Option<u64>| -> ArrayRef {
        Arc::new(
            records
                .iter()
                .map(|r| f(r).map(|n| i64::try_from(n).unwrap_or(i64::MAX)))
                .collect::<Int64Array>(),
        )
    };
    let time = |f: fn(&RunRecord) -> DateTime<Utc>| -> ArrayRef {
        Arc::new(
            records
                .iter()
                .map(|r| Some(f(r).timestamp_micros()))
                .collect::<TimestampMicrosecondArray>()
                .with_timezone("UTC"),
        )
    };
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let schema = Schema::new(vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new("pipeline", DataType::Utf8, false),
        Field::new("stream", DataType::Utf8, false),
        Field::new("started_at", ts.clone(), false),
        Field::new("finished_at", ts, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("rows_written", DataType::Int64, false),
        Field::new("records_read", DataType::Int64, false),
        Field::new("requests", DataType::Int64, false),
        Field::new("retries", DataType::Int64, false),
        Field::new("throttled", DataType::Int64, false),
        Field::new("api_count", DataType::Int64, true),
        Field::new("count_mismatch", DataType::Boolean, false),
        Field::new("error", DataType::Utf8, true),
        Field::new("lucca_sync_version", DataType::Utf8, false),
    ]);
    let columns: Vec<ArrayRef> = vec![
        text(|r| Some(&r.run_id)),
        text(|r| Some(&r.pipeline)),
        text(|r| Some(&r.stream)),
        time(|r| r.started_at),
        time(|r| r.finished_at),
        text(|r| Some(&r.status)),
        count(|r| Some(r.rows_written)),
        count(|r| Some(r.records_read)),
        count(|r| Some(r.requests)),
        count(|r| Some(r.retries)),
        count(|r| Some(r.throttled)),
        count(|r| r.api_count),
        Arc::new(
            records
                .iter()
                .map(|r| Some(r.count_mismatch))
                .collect::<BooleanArray>(),
        ),
        text(|r| r.error.as_deref()),
        text(|_| Some(env!("CARGO_PKG_VERSION"))),
    ];
    RecordBatch::try_new(Arc::new(schema), columns)
}

/// How the loaders use the machine.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// DuckDB's `memory_limit` while loading, e.g. `32MB`.
    pub duckdb_memory_limit: String,
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
    pub fn open(
        destination: &DestinationSpec,
        run_id: &str,
        options: &LoadOptions,
    ) -> Result<Self, LoadError> {
        Ok(match destination {
            DestinationSpec::Duckdb(d) => {
                Load::Duckdb(duckdb::DuckdbLoad::open(&d.path, run_id, options)?)
            }
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

    /// The destination's tables of a stream (its own and its child tables)
    /// with their columns; empty before the stream's first run.
    pub fn existing_tables(
        &self,
        stream: &str,
    ) -> Result<std::collections::HashMap<String, TableColumns>, LoadError> {
        match self {
            Load::Duckdb(d) => d.existing_tables(stream),
            Load::Parquet(p) => p.existing_tables(stream),
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

    /// Records the run history and makes every committed stream visible:
    /// all at once (DuckDB) or stream by stream, each atomically (Parquet).
    pub fn publish(self, history: &[RunRecord]) -> Result<(), LoadError> {
        match self {
            Load::Duckdb(d) => d.publish(history),
            Load::Parquet(p) => p.publish(history),
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

/// Over this share of distinct values in a first batch, a column is
/// written without a dictionary (Parquet) or with FSST (DuckDB text).
pub(crate) const MOSTLY_DISTINCT: f64 = 0.5;

/// The share of distinct values among a text or 64-bit column's non-null
/// values, judged on at least 100 values (`None` below that, or for other
/// types). Both loaders judge a stream's first batch with it, to spare the
/// encodings that cannot pay off: a dictionary for mostly distinct values
/// (ids, e-mails, timestamps), anything but a dictionary for a handful of
/// departments.
pub(crate) fn distinct_share(column: &dyn Array) -> Option<f64> {
    fn share<T: std::hash::Hash + Eq>(values: impl Iterator<Item = T>) -> Option<f64> {
        let mut count = 0usize;
        let distinct: HashSet<T> = values.inspect(|_| count += 1).collect();
        (count >= 100).then(|| distinct.len() as f64 / count as f64)
    }
    if let Some(text) = column.as_string_opt::<i32>() {
        share(text.iter().flatten())
    } else if let Some(ints) = column.as_primitive_opt::<Int64Type>() {
        share(ints.iter().flatten())
    } else if let Some(times) = column.as_primitive_opt::<TimestampMicrosecondType>() {
        share(times.iter().flatten())
    } else {
        None
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
