//! The Parquet loader. Each stream is a directory of Parquet files,
//! `{dir}/{stream}/`, which leads to a version directory
//! `{dir}/.lucca-sync/{stream}/{run_id}/` holding the files of one run
//! (`{run_id}-0.parquet`, under `{column}={value}/` directories when the
//! stream is partitioned), through two links: `{stream}` ->
//! `.lucca-sync/_current/{stream}`, and `_current` -> a published state,
//! `.lucca-sync/_published/{run_id}/`, a directory of one link per stream
//! to its version. A run writes its new versions and a new published state
//! (the other streams keep their versions), then renames a new `_current`
//! link over the old one: a single atomic step for all the streams of the
//! directory, so a reader sees either the old files of every stream or the
//! new ones, never a mix, and a killed run leaves the old state. The
//! previous state and its versions are kept until the next run, so a
//! reader that was listing them can finish. A stream's incremental cursor
//! is stored beside the version it describes (`{run_id}.state.json`) and
//! is therefore published in the same step, as is the run's history
//! (`_runs/{run_id}.parquet`, moved there from the published state after
//! the switch, or by the next run if this one is killed first).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray, UInt32Array, new_null_array,
};
use arrow::datatypes::{DataType, Field, FieldRef, Int64Type, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use super::{
    LoadError, MOSTLY_DISTINCT, RUN_ID_COLUMN, RunRecord, StreamCommit, TableColumns,
    distinct_share, lock::DestinationLock, run_history_batch, sync_dir,
};
use crate::pipeline::WriteMode;

/// Rows per row group: large enough for fast scans, small enough for
/// readers to skip by statistics (DuckDB's own default).
pub const ROW_GROUP_ROWS: usize = 122_880;

/// A row group is also closed once the writer holds this much memory, so
/// that a run's memory does not depend on how wide the records are (or on
/// how many rows a stream has: below a full row group, the buffer would
/// otherwise grow with the stream).
const ROW_GROUP_MEMORY: usize = 8 << 20;

/// glibc raises its mmap threshold each time a large block is freed, so
/// the column buffers that come and go during a run end up in the heap,
/// which then grows with the run's length. A fixed threshold keeps them
/// mapped, and the peak RSS flat (Parquet, 1M records per stream: 62 ->
/// 51 MB, 1.29x -> 1.2x the 100k figure). It is 1 MiB, above hyper's read
/// buffer (up to 400 KiB, allocated afresh for each read of a large body):
/// at 256 KiB each of those was mapped, faulted in and unmapped (1M records
/// per stream: 1.0 -> 0.5 s of system time, 4.1 -> 3.7 s). Not for DuckDB:
/// its buffer manager allocates 256 KiB blocks, which would each be mapped
/// and unmapped (measured: 15% slower). `MALLOC_MMAP_THRESHOLD_` in the
/// environment still decides.
fn steady_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        // SAFETY: mallopt only tunes the allocator, under its own lock.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 1024 * 1024);
        }
    }
}

/// Writes `batch`, then closes the row group if the writer's buffer is full.
fn write_bounded(
    writer: &mut ArrowWriter<File>,
    batch: &RecordBatch,
) -> Result<(), parquet::errors::ParquetError> {
    writer.write(batch)?;
    if writer.memory_size() > ROW_GROUP_MEMORY {
        writer.flush()?;
    }
    Ok(())
}

/// lucca-sync's own directory inside the destination: version directories,
/// their state files, and this run's staging space.
pub const INTERNAL_DIR: &str = ".lucca-sync";
/// Directory of the run history, one file per run.
pub const RUNS_DIR: &str = "_runs";
/// Inside [`INTERNAL_DIR`]: the published states, one directory of links
/// per run (stream names never start with `_`).
const PUBLISHED_DIR: &str = "_published";
/// Inside [`INTERNAL_DIR`]: the link to the current published state.
const CURRENT_LINK: &str = "_current";
/// Inside a published state: the link to the state before it.
const PREVIOUS_LINK: &str = "_previous";
/// Inside a published state: its run's history, until filed in `_runs/`.
const HISTORY_FILE: &str = "_runs.parquet";
/// The published state made of the streams' own links of a directory
/// written before published states existed.
const LEGACY_STATE: &str = "_legacy";
/// The longest file or directory name most file systems take (ext4, XFS,
/// APFS, NTFS: 255).
const MAX_NAME_BYTES: usize = 255;
/// Directory name of a null partition value (Hive's convention, read as
/// NULL by pyarrow, Spark and Hive).
pub const HIVE_NULL: &str = "__HIVE_DEFAULT_PARTITION__";

/// A load in progress into one Parquet directory.
pub struct ParquetLoad {
    dir: PathBuf,
    run_id: String,
    staging: PathBuf,
    writers: HashMap<String, StreamFile>,
    /// Streams with a new version, in commit order.
    committed: Vec<String>,
    _lock: DestinationLock,
}

/// The stored cursor of one stream.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct StreamState {
    pipeline: String,
    cursor_field: String,
    cursor: String,
    run_id: String,
}

/// The parts of one stream: a new part starts whenever the schema grows.
struct StreamFile {
    parts: Vec<PathBuf>,
    writer: Option<ArrowWriter<File>>,
    schema: Option<SchemaRef>,
    rows: u64,
}

/// Writer settings for a file whose first rows are `sample`: zstd level 1
/// (most of level 3's ratio on this data, at a fraction of its CPU), and no
/// dictionary for the columns that are mostly distinct in the sample (ids,
/// e-mails, timestamps): their dictionary would only be built, found too
/// big and dropped for every row group, at a cost in CPU and memory. Those
/// that are integers, dates or timestamps are stored as deltas
/// (DELTA_BINARY_PACKED, read by DuckDB since 0.9, pyarrow and polars):
/// ascending ids shrink to a few bits each before zstd sees them (time
/// entries 1M: 3.8 -> 2.8 MB, and about 2% less wall time).
fn properties(sample: &RecordBatch) -> Result<WriterProperties, parquet::errors::ParquetError> {
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1)?))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_created_by(concat!("lucca-sync ", env!("CARGO_PKG_VERSION")).to_owned());
    for (field, column) in sample.schema().fields().iter().zip(sample.columns()) {
        if distinct_share(column.as_ref()).is_some_and(|share| share > MOSTLY_DISTINCT) {
            let path = ColumnPath::from(field.name().as_str());
            builder = builder.set_column_dictionary_enabled(path.clone(), false);
            if matches!(
                field.data_type(),
                DataType::Int64 | DataType::Timestamp(..) | DataType::Date32
            ) {
                builder = builder.set_column_encoding(path, Encoding::DELTA_BINARY_PACKED);
            }
        }
    }
    Ok(builder.build())
}

fn io_err(action: &str, path: &Path) -> impl FnOnce(std::io::Error) -> LoadError + use<> {
    let action = action.to_owned();
    let path = path.to_path_buf();
    move |source| LoadError::Io {
        action,
        path,
        source,
    }
}

fn parquet_err(
    path: &Path,
    context: &str,
) -> impl Fn(parquet::errors::ParquetError) -> LoadError + use<> {
    let path = path.to_path_buf();
    let context = context.to_owned();
    move |source| LoadError::Parquet {
        path: path.clone(),
        context: context.clone(),
        source,
    }
}

fn arrow_err(path: &Path, context: &str) -> impl Fn(arrow::error::ArrowError) -> LoadError + use<> {
    let path = path.to_path_buf();
    let context = context.to_owned();
    move |source| LoadError::Arrow {
        path: path.clone(),
        context: context.clone(),
        source,
    }
}

impl ParquetLoad {
    /// Takes the directory's lock, finishes what a run killed after its
    /// publish left (its history file), clears what killed runs left
    /// (staging, unpublished versions) and creates this run's staging
    /// directory.
    pub fn open(dir: &Path, run_id: &str) -> Result<Self, LoadError> {
        steady_heap();
        fs::create_dir_all(dir).map_err(io_err("create the directory", dir))?;
        let lock = DestinationLock::acquire(&dir.join(".lucca-sync.lock"))?;
        let internal = dir.join(INTERNAL_DIR);
        fs::create_dir_all(&internal).map_err(io_err("create the directory", &internal))?;
        let load = ParquetLoad {
            dir: dir.to_path_buf(),
            run_id: run_id.to_owned(),
            staging: internal.join(format!("staging-{run_id}")),
            writers: HashMap::new(),
            committed: Vec::new(),
            _lock: lock,
        };
        if let Ok(entries) = fs::read_dir(&internal) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with("staging-") {
                    tracing::info!(dir = %entry.path().display(), "removing the staging directory of an interrupted run");
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
        load.file_history()?;
        load.remove_leftover_links();
        if let Some(current) = load.current_run() {
            let previous = fs::read_link(load.published_dir(&current).join(PREVIOUS_LINK))
                .ok()
                .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()));
            load.prune(&[Some(current), previous]);
        }
        fs::create_dir_all(&load.staging)
            .map_err(io_err("create the staging directory", &load.staging))?;
        Ok(load)
    }

    fn internal(&self) -> PathBuf {
        self.dir.join(INTERNAL_DIR)
    }

    /// `{dir}/.lucca-sync/{stream}`: the versions of a stream.
    fn versions_dir(&self, stream: &str) -> PathBuf {
        self.internal().join(stream)
    }

    /// `{dir}/.lucca-sync/_published/{run_id}`: the links of one published
    /// state of the directory.
    fn published_dir(&self, run_id: &str) -> PathBuf {
        self.internal().join(PUBLISHED_DIR).join(run_id)
    }

    /// The run whose published state is current (`_current` points to it).
    fn current_run(&self) -> Option<String> {
        fs::read_link(self.internal().join(CURRENT_LINK))
            .ok()
            .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
    }

    /// The published streams and their versions (run ids), as a published
    /// state's links give them; for a directory written before published
    /// states existed, as each stream's own link gives them.
    fn versions_in(&self, published: Option<&Path>) -> BTreeMap<String, String> {
        let (dir, legacy) = match published {
            Some(published) => (published.to_path_buf(), false),
            None => (self.dir.clone(), true),
        };
        let Ok(entries) = fs::read_dir(&dir) else {
            return BTreeMap::new();
        };
        entries
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                let target = fs::read_link(entry.path()).ok()?;
                if name.starts_with('_') || (legacy && !target.starts_with(INTERNAL_DIR)) {
                    return None;
                }
                let version = target.file_name()?.to_string_lossy().into_owned();
                Some((name, version))
            })
            .collect()
    }

    /// The published streams and their versions.
    fn published_versions(&self) -> BTreeMap<String, String> {
        match self.current_run() {
            Some(run) => self.versions_in(Some(&self.published_dir(&run))),
            None => self.versions_in(None),
        }
    }

    /// The published version of a stream (its run id), if any.
    fn current_version(&self, stream: &str) -> Option<String> {
        self.published_versions().remove(stream)
    }

    fn state_path(&self, stream: &str, version: &str) -> PathBuf {
        self.versions_dir(stream)
            .join(format!("{version}.state.json"))
    }

    fn stored_state(&self, stream: &str) -> Option<StreamState> {
        let version = self.current_version(stream)?;
        let bytes = fs::read(self.state_path(stream, &version)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Keeps the given published states (the current one and the one
    /// before it, which a reader may still be listing) and the versions
    /// they name; removes every other published state and version, among
    /// them those of killed runs.
    fn prune(&self, keep: &[Option<String>]) {
        let keep: Vec<&String> = keep.iter().flatten().collect();
        let mut kept_versions: HashSet<(String, String)> = HashSet::new();
        for run in &keep {
            kept_versions.extend(self.versions_in(Some(&self.published_dir(run))));
        }
        let published = self.internal().join(PUBLISHED_DIR);
        for entry in fs::read_dir(&published).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep.iter().any(|k| **k == name) {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
        let Ok(streams) = fs::read_dir(self.internal()) else {
            return;
        };
        for stream in streams.flatten() {
            let stream_name = stream.file_name().to_string_lossy().into_owned();
            if stream_name.starts_with('_') || stream_name.starts_with("staging-") {
                continue;
            }
            for entry in fs::read_dir(stream.path()).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let version = name.strip_suffix(".state.json").unwrap_or(&name).to_owned();
                if !kept_versions.contains(&(stream_name.clone(), version)) {
                    let path = entry.path();
                    let _ = if path.is_dir() {
                        fs::remove_dir_all(&path)
                    } else {
                        fs::remove_file(&path)
                    };
                }
            }
            let _ = fs::remove_dir(stream.path());
        }
    }

    /// Appends a batch to the stream's current part.
    pub fn write(&mut self, stream: &str, batch: &RecordBatch) -> Result<(), LoadError> {
        let staging = self.staging.clone();
        let file = self.writers.entry(stream.to_owned()).or_insert(StreamFile {
            parts: Vec::new(),
            writer: None,
            schema: None,
            rows: 0,
        });
        let schema = batch.schema();
        if file.schema.as_ref() != Some(&schema) {
            if let Some(writer) = file.writer.take() {
                let part = file.parts.last().cloned().unwrap_or_default();
                writer
                    .close()
                    .map_err(parquet_err(&part, "finish a part file"))?;
            }
            let part = staging.join(format!("{stream}.part{}.parquet", file.parts.len()));
            let handle = File::create(&part).map_err(io_err("create", &part))?;
            let props = properties(batch).map_err(parquet_err(&part, "configure the writer"))?;
            let writer = ArrowWriter::try_new(handle, Arc::clone(&schema), Some(props))
                .map_err(parquet_err(&part, "start writing"))?;
            file.parts.push(part);
            file.writer = Some(writer);
            file.schema = Some(schema);
        }
        let part = file.parts.last().cloned().unwrap_or_default();
        if let Some(writer) = file.writer.as_mut() {
            write_bounded(writer, batch).map_err(parquet_err(
                &part,
                &format!("write rows of stream `{stream}`"),
            ))?;
        }
        file.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Builds the stream's new version directory (unpublished): this run's
    /// rows (`replace`), or the published rows combined with them (`append`
    /// tags them with the run id, `merge` replaces rows of the same key),
    /// and its state file.
    pub fn commit_stream(&mut self, stream: &str, commit: &StreamCommit) -> Result<u64, LoadError> {
        let link = self.dir.join(stream);
        if link.exists() && fs::read_link(&link).is_err() {
            return Err(LoadError::Io {
                action: "publish stream into".into(),
                path: link,
                source: std::io::Error::other(
                    "it exists and is not the link lucca-sync manages; move it away",
                ),
            });
        }
        let previous = self
            .current_version(stream)
            .map(|v| self.versions_dir(stream).join(v));
        let parent_keys = self.parent_keys(commit)?;
        let mut file = self.writers.remove(stream).unwrap_or(StreamFile {
            parts: Vec::new(),
            writer: None,
            schema: None,
            rows: 0,
        });
        if let Some(writer) = file.writer.take() {
            let part = file.parts.last().cloned().unwrap_or_default();
            writer
                .close()
                .map_err(parquet_err(&part, "finish a part file"))?;
        }
        let schema = match file.schema.clone() {
            Some(schema) => schema,
            // No record: append and merge have nothing to add; a replaced
            // stream becomes empty.
            // A merged child table without new items still loses the items
            // of the parent records rewritten.
            None if parent_keys.is_some() && previous.is_some() => Arc::new(Schema::empty()),
            None if commit.write_mode != WriteMode::Replace => return Ok(0),
            // An emptied table keeps the columns it had (one empty file,
            // so that readers still find the table and its columns).
            None => match &previous {
                Some(previous) => match parquet_files(previous, &commit.partition_by)?.first() {
                    Some(old) => file_schema_of(&old.path)?,
                    None => Arc::new(Schema::empty()),
                },
                None => Arc::new(Schema::empty()),
            },
        };
        let version = self.versions_dir(stream).join(&self.run_id);
        fs::create_dir_all(&version).map_err(io_err("create the directory", &version))?;

        let new_tag = (commit.write_mode == WriteMode::Append).then(|| commit.run_id.clone());
        let mut new_fields: Vec<FieldRef> = schema.fields().iter().cloned().collect();
        if new_tag.is_some() {
            new_fields.push(Arc::new(Field::new(RUN_ID_COLUMN, DataType::Utf8, true)));
        }
        let old_files = match (&previous, commit.write_mode) {
            (Some(previous), WriteMode::Append | WriteMode::Merge) => {
                parquet_files(previous, &commit.partition_by)?
            }
            _ => Vec::new(),
        };
        let target = union_schema(old_files.first(), &schema, new_fields)?;
        let read_again = if commit.write_mode == WriteMode::Append {
            self.read_again(commit, &file.parts, &old_files)?
        } else {
            None
        };

        let mut written = file.rows;
        let merged_keys = if commit.write_mode == WriteMode::Merge && commit.parent.is_none() {
            Some(primary_keys(&file.parts, &commit.primary_key)?)
        } else {
            None
        };
        let superseded = match &merged_keys {
            Some((_, repeated)) if !repeated.is_empty() => {
                let superseded = superseded_rows(&file.parts, &commit.primary_key, repeated)?;
                let dropped: usize = superseded.iter().map(HashSet::len).sum();
                tracing::debug!(
                    stream,
                    keys = repeated.len(),
                    rows = dropped,
                    "merge: keys staged more than once keep their last version"
                );
                written -= dropped as u64;
                superseded
            }
            _ => Vec::new(),
        };
        // This run's one file is the new version as it is: a replace, or a
        // first merge whose keys are each staged once.
        let as_staged = match commit.write_mode {
            WriteMode::Replace => true,
            WriteMode::Merge => {
                old_files.is_empty() && commit.parent.is_none() && superseded.is_empty()
            }
            WriteMode::Append => false,
        };
        if as_staged && commit.partition_by.is_empty() && file.parts.len() == 1 {
            let part = &file.parts[0];
            let to = version.join(format!("{}-0.parquet", self.run_id));
            fs::rename(part, &to).map_err(io_err("rename", part))?;
        } else {
            let mut skip_rows = superseded.into_iter();
            let skip = if old_files.is_empty() {
                None
            } else if parent_keys.is_some() {
                parent_keys.clone()
            } else {
                merged_keys.map(|(keys, _)| (commit.primary_key.clone(), keys))
            };
            let mut writer =
                VersionWriter::new(&version, &self.run_id, &target, &commit.partition_by);
            let mut sources: Vec<Source> = Vec::new();
            // Published files unchanged by an append are linked, not copied.
            let link_old = commit.write_mode == WriteMode::Append
                && commit.partition_by.is_empty()
                && old_files
                    .first()
                    .is_some_and(|old| file_schema_of(&old.path).ok().as_ref() == Some(&target));
            for old in &old_files {
                if link_old {
                    let to = version.join(&old.relative);
                    fs::hard_link(&old.path, &to)
                        .or_else(|_| fs::copy(&old.path, &to).map(|_| ()))
                        .map_err(io_err("link the published file", &old.path))?;
                } else {
                    sources.push(Source {
                        path: old.path.clone(),
                        skip_keys: skip.clone(),
                        skip_rows: HashSet::new(),
                        tag: None,
                        constants: old.partition.clone(),
                    });
                }
            }
            if let Some((columns, keys)) = &read_again {
                written -= count_keys_in(&file.parts, columns, keys)?;
            }
            for part in &file.parts {
                sources.push(Source {
                    path: part.clone(),
                    skip_keys: read_again.clone(),
                    skip_rows: skip_rows.next().unwrap_or_default(),
                    tag: new_tag.clone(),
                    constants: Vec::new(),
                });
            }
            combine(&sources, &target, &mut writer)?;
            writer.finish()?;
        }
        for part in &file.parts {
            let _ = fs::remove_file(part);
        }

        let state = match &commit.state {
            Some((field, cursor)) => Some(StreamState {
                pipeline: commit.pipeline.clone(),
                cursor_field: field.clone(),
                cursor: cursor.clone(),
                run_id: commit.run_id.clone(),
            }),
            // No new cursor (no record this run): the stored one still holds.
            None => self.stored_state(stream),
        };
        if let Some(state) = state {
            let path = self.state_path(stream, &self.run_id);
            let text = serde_json::to_vec_pretty(&state).unwrap_or_default();
            fs::write(&path, text)
                .and_then(|()| File::open(&path).and_then(|f| f.sync_all()))
                .map_err(io_err("write the state file", &path))?;
        }
        self.committed.push(stream.to_owned());
        Ok(written)
    }

    /// For an append that reads records again (see
    /// [`StreamCommit::version_key`]): the columns and keys of the staged
    /// rows (of `staged` columns) to leave out, the record versions the
    /// stream's published files already have, or in a child table the items
    /// of those records. `None` when nothing is left out.
    fn read_again(
        &mut self,
        commit: &StreamCommit,
        staged: &[PathBuf],
        old_files: &[VersionFile],
    ) -> Result<Option<KeysToSkip>, LoadError> {
        // The columns of the first part, which every later part has too (a
        // part ends when the columns grow).
        let names = |parts: &[PathBuf]| -> Result<Vec<String>, LoadError> {
            Ok(match parts.first() {
                Some(first) => file_schema_of(first)?
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect(),
                None => Vec::new(),
            })
        };
        if let Some(columns) = commit.version_key.columns(&names(staged)?) {
            let old: Vec<PathBuf> = old_files.iter().map(|f| f.path.clone()).collect();
            return Ok(keys_of(&old, &columns)?.map(|keys| (columns, Arc::new(keys))));
        }
        let Some(link) = commit.parent_read_again() else {
            return Ok(None);
        };
        let Some(version) = self.current_version(&link.table) else {
            return Ok(None);
        };
        let Some(parts) = self.finished_parts(&link.table)? else {
            return Ok(None);
        };
        let parts = parts.to_vec();
        let Some(columns) = link.parent_version_key.columns(&names(&parts)?) else {
            return Ok(None);
        };
        let published: Vec<PathBuf> =
            parquet_files(&self.versions_dir(&link.table).join(version), &[])?
                .into_iter()
                .map(|f| f.path)
                .collect();
        let Some(published) = keys_of(&published, &columns)? else {
            return Ok(None);
        };
        // The keys of the parent's staged rows that are versions read again.
        let mut parents = KeySet::new(&link.parent_key);
        let mut repeated = HashSet::new();
        for path in &parts {
            for batch in open_batches(path)? {
                let batch = batch.map_err(arrow_err(path, "read"))?;
                let new = published.keep(&batch, &columns, path)?;
                let again = arrow::compute::not(&new).map_err(arrow_err(path, "read"))?;
                let again = arrow::compute::filter_record_batch(&batch, &again)
                    .map_err(arrow_err(path, "read"))?;
                parents.add(&again, &link.parent_key, path, &mut repeated)?;
            }
        }
        Ok(Some((link.child_key.clone(), Arc::new(parents))))
    }

    /// For a merged child table: its key columns and the keys of the parent
    /// records this run rewrites (the parent's staged rows).
    fn parent_keys(&mut self, commit: &StreamCommit) -> Result<Option<KeysToSkip>, LoadError> {
        let Some(link) = commit
            .parent
            .as_ref()
            .filter(|_| commit.write_mode == WriteMode::Merge)
        else {
            return Ok(None);
        };
        let Some(parts) = self.finished_parts(&link.table)? else {
            return Ok(None);
        };
        let (keys, _) = primary_keys(parts, &link.parent_key)?;
        Ok(Some((link.child_key.clone(), keys)))
    }

    /// The staged part files of a table, its open part finished first;
    /// `None` when the run staged nothing for it.
    fn finished_parts(&mut self, table: &str) -> Result<Option<&[PathBuf]>, LoadError> {
        let Some(file) = self.writers.get_mut(table) else {
            return Ok(None);
        };
        if let Some(writer) = file.writer.take() {
            let part = file.parts.last().cloned().unwrap_or_default();
            writer
                .close()
                .map_err(parquet_err(&part, "finish a part file"))?;
        }
        Ok(Some(&file.parts))
    }

    /// The stream's published tables (its own and its child tables) with
    /// their columns, partition columns included.
    pub fn existing_tables(
        &self,
        stream: &str,
    ) -> Result<HashMap<String, TableColumns>, LoadError> {
        let mut tables = HashMap::new();
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Ok(tables);
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !super::belongs_to_stream(&name, stream) || fs::read_link(entry.path()).is_err() {
                continue;
            }
            let mut columns = TableColumns::new();
            if let Some((file, partitions)) = first_parquet_file(&entry.path(), Vec::new()) {
                columns.extend(partitions.into_iter().map(|p| (p, None)));
                columns.extend(
                    file_schema_of(&file)?
                        .fields()
                        .iter()
                        .map(|f| (f.name().clone(), Some(f.data_type().clone()))),
                );
            }
            tables.insert(name, columns);
        }
        Ok(tables)
    }

    /// The stored cursor of an incremental stream, if any: the one stored
    /// with the published version.
    pub fn read_state(&self, pipeline: &str, stream: &str) -> Option<String> {
        self.stored_state(stream)
            .filter(|s| s.pipeline == pipeline)
            .map(|s| s.cursor)
    }

    /// Forgets what a failed stream wrote.
    pub fn discard_stream(&mut self, stream: &str) -> Result<(), LoadError> {
        if let Some(file) = self.writers.remove(stream) {
            drop(file.writer);
            for part in file.parts {
                let _ = fs::remove_file(part);
            }
        }
        Ok(())
    }

    /// Publishes the run in one atomic step: the new versions (flushed to
    /// disk first) and the versions of the other published streams are
    /// linked from a new published state, `_published/{run_id}/`, which
    /// also holds the run's history file; renaming a new `_current` link
    /// over the old one then switches every stream at once. Each stream's
    /// own link, `{dir}/{stream}` -> `.lucca-sync/_current/{stream}`, is
    /// made once. The history file then moves to `_runs/` (a run killed
    /// before it does is finished by the next one), and the published
    /// states and versions older than the previous one are removed.
    pub fn publish(self, history: &[RunRecord]) -> Result<(), LoadError> {
        for stream in &self.committed {
            sync_tree(&self.versions_dir(stream).join(&self.run_id))?;
        }
        if self.current_run().is_none() {
            // A directory written before published states: its streams'
            // own links become the current state, with the same versions.
            let legacy = self.versions_in(None);
            if !legacy.is_empty() {
                self.write_published_state(LEGACY_STATE, &legacy, None, None)?;
                self.switch_current(LEGACY_STATE)?;
            }
        }
        let previous = self.current_run();
        let mut versions = self.published_versions();
        // A stream whose link was removed by hand is no longer published.
        versions.retain(|stream, _| fs::symlink_metadata(self.dir.join(stream)).is_ok());
        for stream in &self.committed {
            versions.insert(stream.clone(), self.run_id.clone());
        }
        // Each stream's own link, made before the switch: a new stream's
        // dangles until then (a killed run's is removed by the next run).
        for stream in versions.keys() {
            let link = self.dir.join(stream);
            let target = Path::new(INTERNAL_DIR).join(CURRENT_LINK).join(stream);
            if fs::read_link(&link).ok().as_deref() != Some(target.as_path()) {
                let temp = self.dir.join(format!(".{stream}.link-{}", self.run_id));
                replace_link(&target, &link, &temp)?;
            }
        }
        let history = if history.is_empty() {
            None
        } else {
            Some(run_history_batch(history).map_err(arrow_err(
                &self.published_dir(&self.run_id).join(HISTORY_FILE),
                "record the run history",
            ))?)
        };
        self.write_published_state(
            &self.run_id,
            &versions,
            previous.as_deref(),
            history.as_ref(),
        )?;
        self.switch_current(&self.run_id)?;
        self.file_history()?;
        let _ = fs::remove_dir_all(&self.staging);
        self.prune(&[Some(self.run_id.clone()), previous]);
        Ok(())
    }

    /// Makes a published state the current one: the atomic step.
    fn switch_current(&self, run: &str) -> Result<(), LoadError> {
        replace_link(
            &Path::new(PUBLISHED_DIR).join(run),
            &self.internal().join(CURRENT_LINK),
            &self
                .internal()
                .join(format!("{CURRENT_LINK}.new-{}", self.run_id)),
        )
    }

    /// Removes the links a killed run left: its temporary links, and the
    /// links of its new streams (made before its publish, leading nowhere).
    fn remove_leftover_links(&self) {
        let current = Path::new(INTERNAL_DIR).join(CURRENT_LINK);
        let temporary = |name: &str| {
            (name.starts_with('.') && name.contains(".link-"))
                || name.starts_with(&format!("{CURRENT_LINK}.new-"))
        };
        for dir in [self.dir.clone(), self.internal()] {
            for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                let Ok(target) = fs::read_link(&path) else {
                    continue;
                };
                let dangling = target.starts_with(&current) && fs::metadata(&path).is_err();
                if dangling || temporary(&entry.file_name().to_string_lossy()) {
                    let _ = fs::remove_file(&path);
                }
            }
        }
    }

    /// Writes a published state: a link per stream to its version, one to
    /// the state before, and the run's history file.
    fn write_published_state(
        &self,
        run: &str,
        versions: &BTreeMap<String, String>,
        previous: Option<&str>,
        history: Option<&RecordBatch>,
    ) -> Result<(), LoadError> {
        let dir = self.published_dir(run);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(io_err("create the directory", &dir))?;
        for (stream, version) in versions {
            let target = Path::new("../..").join(stream).join(version);
            let link = dir.join(stream);
            symlink_dir(&target, &link).map_err(io_err("link", &link))?;
        }
        if let Some(previous) = previous {
            let link = dir.join(PREVIOUS_LINK);
            symlink_dir(&Path::new("..").join(previous), &link).map_err(io_err("link", &link))?;
        }
        if let Some(batch) = history {
            write_file(&dir.join(HISTORY_FILE), batch)?;
        }
        File::open(&dir)
            .and_then(|f| f.sync_all())
            .map_err(io_err("flush", &dir))?;
        sync_dir(&dir);
        Ok(())
    }

    /// Moves the current published state's history file to
    /// `_runs/{run_id}.parquet`, if it is still there.
    fn file_history(&self) -> Result<(), LoadError> {
        let Some(run) = self.current_run() else {
            return Ok(());
        };
        let from = self.published_dir(&run).join(HISTORY_FILE);
        if !from.exists() {
            return Ok(());
        }
        let runs = self.dir.join(RUNS_DIR);
        fs::create_dir_all(&runs).map_err(io_err("create the directory", &runs))?;
        let to = runs.join(format!("{run}.parquet"));
        fs::rename(&from, &to).map_err(io_err("publish", &to))?;
        sync_dir(&to);
        sync_dir(&from);
        Ok(())
    }

    /// Leaves the directory as it was.
    pub fn abandon(mut self) {
        drop(std::mem::take(&mut self.writers));
        let _ = fs::remove_dir_all(&self.staging);
        for stream in &self.committed {
            let versions = self.versions_dir(stream);
            let _ = fs::remove_dir_all(versions.join(&self.run_id));
            let _ = fs::remove_file(versions.join(format!("{}.state.json", self.run_id)));
        }
    }
}

/// Points `link` at `target` in one atomic step: a new link made at
/// `temp`, renamed over the old one.
fn replace_link(target: &Path, link: &Path, temp: &Path) -> Result<(), LoadError> {
    let _ = fs::remove_file(temp);
    symlink_dir(target, temp)
        .and_then(|()| fs::rename(temp, link))
        .map_err(io_err("publish", link))?;
    sync_dir(link);
    Ok(())
}

#[cfg(unix)]
fn symlink_dir(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(windows)]
fn symlink_dir(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::windows::fs::symlink_dir(target, link)
}

/// Flushes every file of a directory tree, and the directories themselves.
fn sync_tree(dir: &Path) -> Result<(), LoadError> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).map_err(io_err("list", &d))?.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                File::open(&path)
                    .and_then(|f| f.sync_all())
                    .map_err(io_err("flush", &path))?;
            }
        }
        if let Ok(f) = File::open(&d) {
            let _ = f.sync_all();
        }
    }
    Ok(())
}

/// Writes one batch as a whole Parquet file.
fn write_file(path: &Path, batch: &RecordBatch) -> Result<(), LoadError> {
    let handle = File::create(path).map_err(io_err("create", path))?;
    let props = properties(batch).map_err(parquet_err(path, "configure the writer"))?;
    let mut writer = ArrowWriter::try_new(handle, batch.schema(), Some(props))
        .map_err(parquet_err(path, "start writing"))?;
    writer
        .write(batch)
        .map_err(parquet_err(path, "write rows"))?;
    let file = writer.into_inner().map_err(parquet_err(path, "finish"))?;
    file.sync_all().map_err(io_err("flush", path))
}

/// A published data file of a version.
struct VersionFile {
    path: PathBuf,
    /// Path inside the version directory.
    relative: PathBuf,
    /// Partition values from its directories: (column, value or null).
    partition: Vec<(String, Option<String>)>,
}

/// Every data file of a version directory, with the partition values its
/// `{column}={value}` directories give.
fn parquet_files(version: &Path, partition_by: &[String]) -> Result<Vec<VersionFile>, LoadError> {
    let mut out = Vec::new();
    let mut stack = vec![version.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).map_err(io_err("list", &d))?.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                let relative = path.strip_prefix(version).unwrap_or(&path).to_path_buf();
                let partition = relative
                    .parent()
                    .into_iter()
                    .flat_map(|p| p.components())
                    .filter_map(|c| {
                        let text = c.as_os_str().to_string_lossy();
                        let (column, value) = text.split_once('=')?;
                        partition_by.iter().any(|p| p == column).then(|| {
                            let value = (value != HIVE_NULL).then(|| unescape_partition(value));
                            (column.to_owned(), value)
                        })
                    })
                    .collect();
                out.push(VersionFile {
                    path,
                    relative,
                    partition,
                });
            }
        }
    }
    out.sort_by(|a, b| a.relative.cmp(&b.relative));
    Ok(out)
}

/// A partition value as a directory name: `/`, `\`, `=`, `%`, control
/// characters and a leading `.` are percent-encoded.
fn escape_partition(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for (i, c) in value.chars().enumerate() {
        if matches!(c, '/' | '\\' | '=' | '%') || c.is_control() || (i == 0 && c == '.') {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    if out.is_empty() {
        // An empty string is not a directory name; Hive reads it as null.
        out.push_str(HIVE_NULL);
    }
    out
}

fn unescape_partition(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = text.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Writes rows of one schema into a version directory: one file, or one
/// file per partition (`{column}={value}/...`, partition columns left out
/// of the files as Hive readers expect).
struct VersionWriter {
    root: PathBuf,
    run_id: String,
    schema: SchemaRef,
    partition_by: Vec<String>,
    /// The files' schema: `schema` without the partition columns.
    file_schema: SchemaRef,
    file_columns: Vec<usize>,
    /// Open files by partition directory ("" when unpartitioned).
    files: HashMap<String, (PathBuf, ArrowWriter<File>)>,
}

impl VersionWriter {
    fn new(root: &Path, run_id: &str, schema: &SchemaRef, partition_by: &[String]) -> Self {
        let file_columns: Vec<usize> = (0..schema.fields().len())
            .filter(|&i| !partition_by.contains(schema.field(i).name()))
            .collect();
        let file_schema = Arc::new(Schema::new(
            file_columns
                .iter()
                .map(|&i| schema.fields()[i].clone())
                .collect::<Vec<_>>(),
        ));
        VersionWriter {
            root: root.to_path_buf(),
            run_id: run_id.to_owned(),
            schema: Arc::clone(schema),
            partition_by: partition_by.to_vec(),
            file_schema,
            file_columns,
            files: HashMap::new(),
        }
    }

    /// Writes a batch of `schema`.
    fn write(&mut self, batch: &RecordBatch) -> Result<(), LoadError> {
        if self.partition_by.is_empty() {
            let batch = batch
                .project(&self.file_columns)
                .map_err(arrow_err(&self.root, "select the file columns"))?;
            return self.write_to(String::new(), &batch);
        }
        // Each row's partition directory, e.g. `legal_entity_id=3`.
        let mut keys: Vec<String> = vec![String::new(); batch.num_rows()];
        for column in &self.partition_by {
            let array = batch.column_by_name(column).ok_or_else(|| LoadError::Io {
                action: "partition".into(),
                path: self.root.clone(),
                source: std::io::Error::other(format!(
                    "partition_by column `{column}` is not among the stream's columns"
                )),
            })?;
            let text = arrow::compute::cast(array, &DataType::Utf8)
                .map_err(arrow_err(&self.root, &format!("partition on `{column}`")))?;
            let text = text.as_string::<i32>();
            for (row, key) in keys.iter_mut().enumerate() {
                if !key.is_empty() {
                    key.push('/');
                }
                let value = if text.is_null(row) {
                    HIVE_NULL.to_owned()
                } else {
                    escape_partition(text.value(row))
                };
                let segment = format!("{column}={value}");
                if segment.len() > MAX_NAME_BYTES {
                    return Err(LoadError::Io {
                        action: "partition".into(),
                        path: self.root.clone(),
                        source: std::io::Error::other(format!(
                            "partition_by column `{column}`: a value makes a directory name of {} bytes, more than file systems allow ({MAX_NAME_BYTES}): partition on a column with short values",
                            segment.len()
                        )),
                    });
                }
                key.push_str(&segment);
            }
        }
        let mut groups: Vec<(String, Vec<u32>)> = Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (row, key) in keys.iter().enumerate() {
            let slot = *index.entry(key.as_str()).or_insert_with(|| {
                groups.push((key.clone(), Vec::new()));
                groups.len() - 1
            });
            groups[slot].1.push(row as u32);
        }
        for (key, rows) in groups {
            let taken = arrow::compute::take_record_batch(batch, &UInt32Array::from(rows))
                .and_then(|b| b.project(&self.file_columns))
                .map_err(arrow_err(&self.root, "split rows by partition"))?;
            self.write_to(key, &taken)?;
        }
        Ok(())
    }

    fn write_to(&mut self, key: String, batch: &RecordBatch) -> Result<(), LoadError> {
        if !self.files.contains_key(&key) {
            let dir = self.root.join(&key);
            fs::create_dir_all(&dir).map_err(io_err("create the directory", &dir))?;
            let path = dir.join(format!("{}-0.parquet", self.run_id));
            let handle = File::create(&path).map_err(io_err("create", &path))?;
            let props = properties(batch).map_err(parquet_err(&path, "configure the writer"))?;
            let writer = ArrowWriter::try_new(handle, Arc::clone(&self.file_schema), Some(props))
                .map_err(parquet_err(&path, "start writing"))?;
            self.files.insert(key.clone(), (path, writer));
        }
        if let Some((path, writer)) = self.files.get_mut(&key) {
            write_bounded(writer, batch).map_err(parquet_err(path, "write rows"))?;
        }
        Ok(())
    }

    /// Closes every file; an unpartitioned version with no row still gets
    /// one (empty) file, so readers see the columns.
    fn finish(mut self) -> Result<(), LoadError> {
        if self.files.is_empty() && self.partition_by.is_empty() && !self.schema.fields().is_empty()
        {
            let empty = RecordBatch::new_empty(Arc::clone(&self.file_schema));
            self.write_to(String::new(), &empty)?;
        }
        for (_, (path, writer)) in self.files {
            writer.close().map_err(parquet_err(&path, "finish"))?;
        }
        Ok(())
    }
}

/// One input of [`combine`].
struct Source {
    path: PathBuf,
    /// Rows whose key (these columns) is in the set are left out (merge).
    skip_keys: Option<KeysToSkip>,
    /// Rows left out by their place in the file, counted from 0 (earlier
    /// versions of a key staged twice).
    skip_rows: HashSet<usize>,
    /// Adds the run id column with this value (append).
    tag: Option<String>,
    /// Columns not in the file, with their value for every row (partition
    /// values of a published file).
    constants: Vec<(String, Option<String>)>,
}

fn open_batches(
    path: &Path,
) -> Result<parquet::arrow::arrow_reader::ParquetRecordBatchReader, LoadError> {
    let reader = File::open(path).map_err(io_err("open", path))?;
    ParquetRecordBatchReaderBuilder::try_new(reader)
        .and_then(|b| b.build())
        .map_err(parquet_err(path, "read"))
}

/// Rows of published files to leave out of a merged version: the key
/// columns and the keys rewritten by this run (shared by every file).
type KeysToSkip = (Vec<String>, Arc<KeySet>);

/// The primary keys a merge rewrites: integers when the key is one integer
/// column, as most Lucca keys are (8 bytes a key: a merge of 1M records
/// into 1M held 227 MB with one String a key), else the text of
/// `row_keys`.
#[derive(Debug)]
enum KeySet {
    Ints { values: HashSet<i64>, null: bool },
    Text(HashSet<String>),
}

/// The key column of a batch when the key is that one integer column.
fn int_key<'a>(batch: &'a RecordBatch, columns: &[String]) -> Option<&'a Int64Array> {
    match columns {
        [only] => batch.column_by_name(only)?.as_primitive_opt::<Int64Type>(),
        _ => None,
    }
}

impl KeySet {
    fn new(columns: &[String]) -> Self {
        match columns {
            [_] => KeySet::Ints {
                values: HashSet::new(),
                null: false,
            },
            _ => KeySet::Text(HashSet::new()),
        }
    }

    /// Adds the keys of a batch's rows; a key already in the set goes into
    /// `repeated` as well, in the text form of [`row_keys`].
    fn add(
        &mut self,
        batch: &RecordBatch,
        columns: &[String],
        path: &Path,
        repeated: &mut HashSet<String>,
    ) -> Result<(), LoadError> {
        if let KeySet::Ints { values, null } = self {
            if let Some(ints) = int_key(batch, columns) {
                for key in ints {
                    match key {
                        Some(key) => {
                            if !values.insert(key) {
                                repeated.insert(int_key_text(Some(key)));
                            }
                        }
                        None if *null => {
                            repeated.insert(int_key_text(None));
                        }
                        None => *null = true,
                    }
                }
                return Ok(());
            }
            // Not an integer column after all: the text form of each key.
            let mut text: HashSet<String> =
                values.iter().map(|key| int_key_text(Some(*key))).collect();
            if *null {
                text.insert(int_key_text(None));
            }
            *self = KeySet::Text(text);
        }
        if let KeySet::Text(keys) = self {
            for key in row_keys(batch, columns, path)? {
                if keys.contains(&key) {
                    repeated.insert(key);
                } else {
                    keys.insert(key);
                }
            }
        }
        Ok(())
    }

    /// Which rows of a batch to keep: those whose key is not in the set.
    fn keep(
        &self,
        batch: &RecordBatch,
        columns: &[String],
        path: &Path,
    ) -> Result<arrow::array::BooleanArray, LoadError> {
        Ok(match (self, int_key(batch, columns)) {
            (KeySet::Ints { values, null }, Some(ints)) => ints
                .iter()
                .map(|key| Some(key.map_or(!*null, |key| !values.contains(&key))))
                .collect(),
            // A published file whose key column is not an integer one
            // (text ids): its values compared as integers.
            (KeySet::Ints { values, null }, None) => key_columns(batch, columns, path)?
                .first()
                .map(|column| {
                    column
                        .as_string::<i32>()
                        .iter()
                        .map(|key| {
                            let rewritten = match key {
                                None => *null,
                                Some(key) => {
                                    key.parse::<i64>().is_ok_and(|key| values.contains(&key))
                                }
                            };
                            Some(!rewritten)
                        })
                        .collect()
                })
                // Not reached: an integer key set has one key column, and
                // key_columns fails when a batch lacks it.
                .unwrap_or_else(|| vec![true; batch.num_rows()].into()),
            (KeySet::Text(keys), _) => row_keys(batch, columns, path)?
                .iter()
                .map(|key| Some(!keys.contains(key)))
                .collect(),
        })
    }
}

/// The first Parquet file under `dir` and the partition columns
/// (`col=value` directories) on the way to it.
fn first_parquet_file(dir: &Path, partitions: Vec<String>) -> Option<(PathBuf, Vec<String>)> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in &entries {
        if path.extension().is_some_and(|e| e == "parquet") && path.is_file() {
            return Some((path.clone(), partitions));
        }
    }
    for path in entries.iter().filter(|p| p.is_dir()) {
        let name = path.file_name()?.to_string_lossy().into_owned();
        let Some((column, _)) = name.split_once('=') else {
            continue;
        };
        let mut deeper = partitions.clone();
        deeper.push(column.to_owned());
        if let Some(found) = first_parquet_file(path, deeper) {
            return Some(found);
        }
    }
    None
}

/// The schema stored in a Parquet file.
fn file_schema_of(path: &Path) -> Result<SchemaRef, LoadError> {
    let file = File::open(path).map_err(io_err("open", path))?;
    Ok(Arc::clone(
        ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(parquet_err(path, "read the schema"))?
            .schema(),
    ))
}

/// The key columns of a batch, as text.
fn key_columns(
    batch: &RecordBatch,
    columns: &[String],
    path: &Path,
) -> Result<Vec<ArrayRef>, LoadError> {
    columns
        .iter()
        .map(|c| {
            let array = batch.column_by_name(c).ok_or_else(|| LoadError::Parquet {
                path: path.to_path_buf(),
                context: format!("merge on primary key column `{c}`"),
                source: parquet::errors::ParquetError::General(format!("no column `{c}`")),
            })?;
            arrow::compute::cast(array, &DataType::Utf8)
                .map_err(arrow_err(path, &format!("read primary key column `{c}`")))
        })
        .collect()
}

/// The text form of a key, from its columns' values (`None` for a null):
/// each value as its length, `:` and the value, a null as `~`, so that two
/// different keys never share it (`a|b` and `c` against `a` and `b|c`, a
/// null against an empty string).
fn key_text<'a>(values: impl IntoIterator<Item = Option<&'a str>>) -> String {
    let mut text = String::new();
    for value in values {
        match value {
            Some(value) => {
                let _ = write!(text, "{}:{value}", value.len());
            }
            None => text.push('~'),
        }
    }
    text
}

/// [`key_text`] of a one-column integer key.
fn int_key_text(key: Option<i64>) -> String {
    key_text([key.map(|key| key.to_string()).as_deref()])
}

/// The [`key_text`] of each row.
fn row_keys(
    batch: &RecordBatch,
    columns: &[String],
    path: &Path,
) -> Result<Vec<String>, LoadError> {
    let parts = key_columns(batch, columns, path)?;
    Ok((0..batch.num_rows())
        .map(|row| {
            key_text(parts.iter().map(|part| {
                let part = part.as_string::<i32>();
                part.is_valid(row).then(|| part.value(row))
            }))
        })
        .collect())
}

/// The keys (`columns`) of every row of some files, reading those columns
/// only; `None` when a file lacks one of them (a table from before the
/// column existed: nothing is known to be there already).
fn keys_of(paths: &[PathBuf], columns: &[String]) -> Result<Option<KeySet>, LoadError> {
    let mut keys = KeySet::new(columns);
    let mut repeated = HashSet::new();
    for path in paths {
        let file = File::open(path).map_err(io_err("open", path))?;
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_err(path, "read"))?;
        let fields = builder.schema().fields();
        if !columns.iter().all(|c| fields.iter().any(|f| f.name() == c)) {
            return Ok(None);
        }
        let mask = parquet::arrow::ProjectionMask::columns(
            builder.parquet_schema(),
            columns.iter().map(String::as_str),
        );
        let reader = builder
            .with_projection(mask)
            .build()
            .map_err(parquet_err(path, "read"))?;
        for batch in reader {
            let batch = batch.map_err(arrow_err(path, "read"))?;
            keys.add(&batch, columns, path, &mut repeated)?;
        }
    }
    Ok(Some(keys))
}

/// How many rows of some files have a key in `keys`.
fn count_keys_in(paths: &[PathBuf], columns: &[String], keys: &KeySet) -> Result<u64, LoadError> {
    let mut count = 0;
    for path in paths {
        for batch in open_batches(path)? {
            let batch = batch.map_err(arrow_err(path, "read"))?;
            let keep = keys.keep(&batch, columns, path)?;
            count += (keep.len() - keep.true_count()) as u64;
        }
    }
    Ok(count)
}

/// Every key of the new rows of a merge, and (in the text form of
/// [`row_keys`]) the keys staged more than once.
fn primary_keys(
    paths: &[PathBuf],
    columns: &[String],
) -> Result<(Arc<KeySet>, HashSet<String>), LoadError> {
    let mut keys = KeySet::new(columns);
    let mut repeated = HashSet::new();
    for path in paths {
        for batch in open_batches(path)? {
            let batch = batch.map_err(arrow_err(path, "read"))?;
            keys.add(&batch, columns, path, &mut repeated)?;
        }
    }
    Ok((Arc::new(keys), repeated))
}

/// For each of a merge's staged files (in the order they were written),
/// the rows to leave out so that a key staged more than once keeps only
/// its last version, as in DuckDB: a record read twice in one run (it
/// moved between pages under offset paging) is one row. Reads the files
/// again, which only happens when some key was staged twice.
fn superseded_rows(
    paths: &[PathBuf],
    columns: &[String],
    repeated: &HashSet<String>,
) -> Result<Vec<HashSet<usize>>, LoadError> {
    // Every (file, row) of each repeated key, in the order written.
    let mut places: HashMap<&str, Vec<(usize, usize)>> = HashMap::new();
    for (file, path) in paths.iter().enumerate() {
        let mut row = 0;
        for batch in open_batches(path)? {
            let batch = batch.map_err(arrow_err(path, "read"))?;
            for key in row_keys(&batch, columns, path)? {
                if let Some(key) = repeated.get(&key) {
                    places.entry(key.as_str()).or_default().push((file, row));
                }
                row += 1;
            }
        }
    }
    let mut superseded = vec![HashSet::new(); paths.len()];
    for rows in places.values() {
        for &(file, row) in rows.iter().rev().skip(1) {
            superseded[file].insert(row);
        }
    }
    Ok(superseded)
}

/// The published files' columns first, then the new ones (partition columns
/// come from the new rows' schema, as they are not in published files).
fn union_schema(
    published: Option<&VersionFile>,
    new_rows: &SchemaRef,
    new: Vec<FieldRef>,
) -> Result<SchemaRef, LoadError> {
    let mut fields: Vec<FieldRef> = match published {
        Some(file) => {
            let mut fields: Vec<FieldRef> = file_schema_of(&file.path)?
                .fields()
                .iter()
                .cloned()
                .collect();
            for (column, _) in &file.partition {
                if let Ok(field) = new_rows.field_with_name(column) {
                    fields.push(Arc::new(field.clone()));
                } else {
                    fields.push(Arc::new(Field::new(column, DataType::Utf8, true)));
                }
            }
            fields
        }
        None => Vec::new(),
    };
    for field in new {
        if !fields.iter().any(|f| f.name() == field.name()) {
            fields.push(field);
        }
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// Writes the sources, in order, as rows of `schema`, batch by batch
/// (memory stays flat): missing columns become nulls (or the source's
/// constant), columns are matched by name and cast to the target type.
fn combine(
    sources: &[Source],
    schema: &SchemaRef,
    writer: &mut VersionWriter,
) -> Result<(), LoadError> {
    for source in sources {
        let widen = arrow_err(&source.path, "widen rows to the table's columns");
        let mut first_row = 0;
        for batch in open_batches(&source.path)? {
            let mut batch = batch.map_err(&widen)?;
            if !source.skip_rows.is_empty() {
                let keep: arrow::array::BooleanArray = (first_row..first_row + batch.num_rows())
                    .map(|row| Some(!source.skip_rows.contains(&row)))
                    .collect();
                first_row += batch.num_rows();
                batch = arrow::compute::filter_record_batch(&batch, &keep).map_err(&widen)?;
            }
            if let Some((columns, skip)) = &source.skip_keys {
                let keep = skip.keep(&batch, columns, &source.path)?;
                batch = arrow::compute::filter_record_batch(&batch, &keep).map_err(&widen)?;
            }
            let rows = batch.num_rows();
            let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
            for field in schema.fields() {
                let constant = source.constants.iter().find(|(c, _)| c == field.name());
                let column = match (batch.column_by_name(field.name()), constant) {
                    // A value the table's type cannot hold is an error,
                    // never a silent NULL.
                    (Some(array), _) => arrow::compute::cast_with_options(
                        array,
                        field.data_type(),
                        &arrow::compute::CastOptions {
                            safe: false,
                            ..Default::default()
                        },
                    ),
                    (None, Some((_, value))) => arrow::compute::cast(
                        &(Arc::new(StringArray::from(vec![value.clone(); rows])) as ArrayRef),
                        field.data_type(),
                    ),
                    (None, None) if field.name() == RUN_ID_COLUMN && source.tag.is_some() => {
                        Ok(Arc::new(StringArray::from(vec![source.tag.clone(); rows])) as ArrayRef)
                    }
                    (None, None) => Ok(new_null_array(field.data_type(), rows)),
                }
                .map_err(&widen)?;
                columns.push(column);
            }
            let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(rows));
            let widened = RecordBatch::try_new_with_options(Arc::clone(schema), columns, &options)
                .map_err(&widen)?;
            writer.write(&widened)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
    use parquet::basic::Encoding;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    use super::{
        CURRENT_LINK, INTERNAL_DIR, PUBLISHED_DIR, escape_partition, unescape_partition, write_file,
    };

    #[test]
    fn mostly_distinct_columns_are_written_without_a_dictionary() {
        let rows = 1000i64;
        let batch = RecordBatch::try_from_iter([
            ("id", Arc::new(Int64Array::from_iter_values(1..=rows)) as _),
            (
                "mail",
                Arc::new(StringArray::from_iter_values(
                    (1..=rows).map(|i| format!("user{i}@acme.example")),
                )) as _,
            ),
            (
                "department",
                Arc::new(StringArray::from_iter_values(
                    (1..=rows).map(|i| ["R&D", "Sales", "Support"][(i % 3) as usize]),
                )) as _,
            ),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("t.parquet");
        write_file(&path, &batch).unwrap_or_else(|e| panic!("{e}"));
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let reader = SerializedFileReader::new(file).unwrap_or_else(|e| panic!("{e}"));
        let group = reader.metadata().row_group(0);
        let dictionary = |i: usize| {
            group
                .column(i)
                .encodings()
                .any(|e| e == Encoding::RLE_DICTIONARY || e == Encoding::PLAIN_DICTIONARY)
        };
        assert!(!dictionary(0), "id: every value distinct");
        assert!(!dictionary(1), "mail: every value distinct");
        assert!(dictionary(2), "department: three values");
        let delta = |i: usize| {
            group
                .column(i)
                .encodings()
                .any(|e| e == Encoding::DELTA_BINARY_PACKED)
        };
        assert!(delta(0), "id: distinct integers are stored as deltas");
        assert!(!delta(1) && !delta(2), "text is not");
        let read: Vec<RecordBatch> = super::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(&path).unwrap_or_else(|e| panic!("{e}")),
        )
        .and_then(|b| b.build())
        .unwrap_or_else(|e| panic!("{e}"))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read, [batch]);
    }

    #[test]
    fn merge_keys_are_integers_while_they_can_be() {
        use super::KeySet;
        let path = std::path::Path::new("t.parquet");
        let columns = vec!["id".to_owned()];
        let ints = RecordBatch::try_from_iter([(
            "id",
            Arc::new(Int64Array::from(vec![Some(1), None, Some(3)])) as _,
        )])
        .unwrap_or_else(|e| panic!("{e}"));
        let text = RecordBatch::try_from_iter([(
            "id",
            Arc::new(StringArray::from(vec![
                Some("3"),
                Some("x"),
                None,
                Some("4"),
            ])) as _,
        )])
        .unwrap_or_else(|e| panic!("{e}"));
        let kept = |keys: &KeySet, batch: &RecordBatch| -> Vec<bool> {
            keys.keep(batch, &columns, path)
                .unwrap_or_else(|e| panic!("{e}"))
                .iter()
                .map(|k| k.unwrap_or(true))
                .collect()
        };
        let mut keys = KeySet::new(&columns);
        let mut repeated = std::collections::HashSet::new();
        keys.add(&ints, &columns, path, &mut repeated)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(keys, KeySet::Ints { .. }));
        assert!(repeated.is_empty());
        // 1, null and 3 were rewritten; text keys are compared by value.
        assert_eq!(kept(&keys, &ints), vec![false, false, false]);
        assert_eq!(kept(&keys, &text), vec![false, true, false, true]);
        // A text key column turns the set into text, nothing lost.
        keys.add(&text, &columns, path, &mut repeated)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(keys, KeySet::Text(_)));
        // Added again: 3 and the null key.
        let mut again: Vec<&str> = repeated.iter().map(String::as_str).collect();
        again.sort();
        assert_eq!(again, ["1:3", "~"]);
        keys.add(&ints, &columns, path, &mut repeated)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut again: Vec<&str> = repeated.iter().map(String::as_str).collect();
        again.sort();
        assert_eq!(again, ["1:1", "1:3", "~"]);
        assert_eq!(kept(&keys, &ints), vec![false, false, false]);
        assert_eq!(kept(&keys, &text), vec![false, false, false, false]);
    }

    #[test]
    fn different_keys_never_share_their_text() {
        let columns = vec!["a".to_owned(), "b".to_owned()];
        let batch = RecordBatch::try_from_iter_with_nullable([
            (
                "a",
                Arc::new(StringArray::from(vec![
                    Some("x|y"),
                    Some("x"),
                    Some("x"),
                    Some("x"),
                    None,
                ])) as _,
                true,
            ),
            (
                "b",
                Arc::new(StringArray::from(vec![
                    Some("z"),
                    Some("y|z"),
                    Some(""),
                    None,
                    Some(""),
                ])) as _,
                true,
            ),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let keys = super::row_keys(&batch, &columns, std::path::Path::new("t.parquet"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(keys, ["3:x|y1:z", "1:x3:y|z", "1:x0:", "1:x~", "~0:"]);
        let distinct: std::collections::HashSet<&String> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len());
    }

    /// `id=name` of every published row of `stream`, by id.
    fn published_rows(dir: &std::path::Path, stream: &str) -> String {
        let mut rows = Vec::new();
        let version = dir.join(stream);
        let mut files: Vec<_> = std::fs::read_dir(&version)
            .unwrap_or_else(|e| panic!("{e}"))
            .flatten()
            .map(|e| e.path())
            .collect();
        files.sort();
        for path in files {
            for batch in super::open_batches(&path).unwrap_or_else(|e| panic!("{e}")) {
                let batch = batch.unwrap_or_else(|e| panic!("{e}"));
                let (Some(ids), Some(names)) = (
                    super::int_key(&batch, &["id".to_owned()]),
                    batch.column_by_name("name"),
                ) else {
                    panic!("no id or name in {}", path.display());
                };
                let names = arrow::array::AsArray::as_string::<i32>(names.as_ref());
                for row in 0..batch.num_rows() {
                    rows.push((ids.value(row), names.value(row).to_owned()));
                }
            }
        }
        rows.sort();
        let shown: Vec<String> = rows
            .iter()
            .map(|(id, name)| format!("{id}={name}"))
            .collect();
        shown.join(",")
    }

    #[test]
    fn a_merge_keeps_the_last_version_of_a_key_staged_twice() {
        use crate::load::StreamCommit;
        use crate::pipeline::WriteMode;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let merge = |run_id: &str| StreamCommit {
            pipeline: "p".into(),
            run_id: run_id.into(),
            write_mode: WriteMode::Merge,
            primary_key: vec!["id".into()],
            ..StreamCommit::default()
        };
        let batch = |ids: Vec<i64>, names: Vec<&str>, extra: bool| {
            // Nullable, as the transform's columns are.
            let mut columns: Vec<(&str, arrow::array::ArrayRef, bool)> = vec![
                ("id", Arc::new(Int64Array::from(ids)), true),
                ("name", Arc::new(StringArray::from(names)), true),
            ];
            if extra {
                columns.push(("extra", Arc::new(StringArray::from(vec!["x"; 2])), true));
            }
            RecordBatch::try_from_iter_with_nullable(columns).unwrap_or_else(|e| panic!("{e}"))
        };
        let run = |run_id: &str, batches: &[RecordBatch]| {
            let mut load =
                super::ParquetLoad::open(dir.path(), run_id).unwrap_or_else(|e| panic!("{e}"));
            for b in batches {
                load.write("users", b).unwrap_or_else(|e| panic!("{e}"));
            }
            let written = load
                .commit_stream("users", &merge(run_id))
                .unwrap_or_else(|e| panic!("{e}"));
            load.publish(&[]).unwrap_or_else(|e| panic!("{e}"));
            written
        };
        // The first run stages 2 twice in one file, 1 in two files (a new
        // column starts a second file).
        let written = run(
            "r1",
            &[
                batch(vec![1, 2, 2], vec!["a", "b", "c"], false),
                batch(vec![3, 1], vec!["d", "e"], true),
            ],
        );
        assert_eq!(published_rows(dir.path(), "users"), "1=e,2=c,3=d");
        assert_eq!(written, 3);
        // Onto published rows: 3 is staged twice and replaces the old 3.
        let written = run("r2", &[batch(vec![3, 4, 3], vec!["f", "g", "h"], false)]);
        assert_eq!(published_rows(dir.path(), "users"), "1=e,2=c,3=h,4=g");
        assert_eq!(written, 2);
    }

    #[test]
    fn a_directory_of_per_stream_links_is_adopted_by_the_next_publish() {
        use crate::load::StreamCommit;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let batch = |ids: Vec<i64>, names: Vec<&str>| {
            RecordBatch::try_from_iter_with_nullable([
                ("id", Arc::new(Int64Array::from(ids)) as ArrayRef, true),
                ("name", Arc::new(StringArray::from(names)) as ArrayRef, true),
            ])
            .unwrap_or_else(|e| panic!("{e}"))
        };
        // The layout before published states: `{stream}` linked to its
        // version directly, one link per stream.
        for (stream, rows) in [
            ("users", batch(vec![1], vec!["a"])),
            ("teams", batch(vec![7], vec!["t"])),
        ] {
            let version = dir.path().join(INTERNAL_DIR).join(stream).join("r0");
            fs::create_dir_all(&version).unwrap_or_else(|e| panic!("{e}"));
            write_file(&version.join("r0-0.parquet"), &rows).unwrap_or_else(|e| panic!("{e}"));
            super::symlink_dir(
                &Path::new(INTERNAL_DIR).join(stream).join("r0"),
                &dir.path().join(stream),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        }
        for run_id in ["r1", "r2"] {
            let mut load =
                super::ParquetLoad::open(dir.path(), run_id).unwrap_or_else(|e| panic!("{e}"));
            load.write("users", &batch(vec![2], vec![run_id]))
                .unwrap_or_else(|e| panic!("{e}"));
            load.commit_stream(
                "users",
                &StreamCommit {
                    run_id: run_id.into(),
                    ..StreamCommit::default()
                },
            )
            .unwrap_or_else(|e| panic!("{e}"));
            load.publish(&[]).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(published_rows(dir.path(), "users"), format!("2={run_id}"));
            assert_eq!(
                published_rows(dir.path(), "teams"),
                "7=t",
                "kept by {run_id}"
            );
        }
        let link = fs::read_link(dir.path().join("teams")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            link,
            Path::new(INTERNAL_DIR).join(CURRENT_LINK).join("teams")
        );
        // r2's state and the one before it (r1's) are kept, with their
        // versions; the adopted state and users' first version are gone.
        let names = |path: PathBuf| -> Vec<String> {
            let mut names: Vec<String> = fs::read_dir(path)
                .unwrap_or_else(|e| panic!("{e}"))
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        let internal = dir.path().join(INTERNAL_DIR);
        assert_eq!(names(internal.join(PUBLISHED_DIR)), ["r1", "r2"]);
        assert_eq!(names(internal.join("users")), ["r1", "r2"]);
        assert_eq!(names(internal.join("teams")), ["r0"]);
    }

    #[test]
    fn a_value_the_published_type_cannot_hold_fails_the_merge() {
        use crate::load::StreamCommit;
        use crate::pipeline::WriteMode;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let run = |run_id: &str, amount: arrow::array::ArrayRef| {
            let mut load =
                super::ParquetLoad::open(dir.path(), run_id).unwrap_or_else(|e| panic!("{e}"));
            let batch = RecordBatch::try_from_iter_with_nullable([
                (
                    "id",
                    Arc::new(Int64Array::from(vec![1])) as arrow::array::ArrayRef,
                    true,
                ),
                ("amount", amount, true),
            ])
            .unwrap_or_else(|e| panic!("{e}"));
            load.write("t", &batch).unwrap_or_else(|e| panic!("{e}"));
            let merge = StreamCommit {
                pipeline: "p".into(),
                run_id: run_id.into(),
                write_mode: WriteMode::Merge,
                primary_key: vec!["id".into()],
                ..StreamCommit::default()
            };
            load.commit_stream("t", &merge).map(|_| load)
        };
        let first =
            run("r1", Arc::new(Int64Array::from(vec![5]))).unwrap_or_else(|e| panic!("{e}"));
        first.publish(&[]).unwrap_or_else(|e| panic!("{e}"));
        match run("r2", Arc::new(StringArray::from(vec!["x"]))) {
            Err(e) => assert!(e.to_string().contains("Cannot cast string 'x'"), "{e}"),
            Ok(_) => panic!("'x' went into the BIGINT column"),
        }
    }

    #[test]
    fn partition_values_survive_a_round_trip_as_directory_names() {
        for value in [
            "3",
            "Paris",
            "a/b",
            "x=y",
            "50%",
            ".hidden",
            "2024-01-01T10:00:00",
        ] {
            let escaped = escape_partition(value);
            assert!(
                !escaped.contains('/') && !escaped.starts_with('.'),
                "{escaped}"
            );
            assert_eq!(unescape_partition(&escaped), value);
        }
        assert_eq!(escape_partition("a/b"), "a%2Fb");
    }

    #[test]
    fn a_partition_value_too_long_for_a_directory_name_says_so() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let batch = RecordBatch::try_from_iter_with_nullable([
            ("id", Arc::new(Int64Array::from(vec![1])) as ArrayRef, true),
            (
                "site",
                Arc::new(StringArray::from(vec!["x".repeat(300)])) as ArrayRef,
                true,
            ),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let mut writer =
            super::VersionWriter::new(dir.path(), "r1", &batch.schema(), &["site".to_owned()]);
        match writer.write(&batch) {
            Err(e) => assert!(
                e.to_string().contains(
                    "partition_by column `site`: a value makes a directory name of 305 bytes"
                ),
                "{e}"
            ),
            Ok(()) => panic!("a 305-byte directory name"),
        }
    }
}
