//! The Parquet loader: each stream is written to a staging directory beside
//! the destination and renamed into place when the run publishes, so
//! readers only ever see complete files.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, RecordBatch, new_null_array};
use arrow::datatypes::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::{LoadError, RUN_ID_COLUMN, StreamCommit, lock::DestinationLock, sync_dir};
use crate::pipeline::WriteMode;

/// Rows per row group: large enough for fast scans, small enough for
/// readers to skip by statistics (DuckDB's own default).
pub const ROW_GROUP_ROWS: usize = 122_880;

/// A load in progress into one Parquet directory.
pub struct ParquetLoad {
    dir: PathBuf,
    staging: PathBuf,
    writers: HashMap<String, StreamFile>,
    committed: Vec<String>,
    /// Incremental cursors, published after the data files they describe.
    states: BTreeMap<String, StreamState>,
    _lock: DestinationLock,
}

/// File of the incremental cursors, beside the data files.
pub const STATE_FILE: &str = "_lucca_sync_state.json";

/// The stored cursor of one stream.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct StreamState {
    cursor_field: String,
    cursor: String,
    run_id: String,
}

fn state_key(pipeline: &str, stream: &str) -> String {
    format!("{pipeline}/{stream}")
}

/// The parts of one stream: a new part starts whenever the schema grows.
struct StreamFile {
    parts: Vec<PathBuf>,
    writer: Option<ArrowWriter<File>>,
    schema: Option<SchemaRef>,
    rows: u64,
}

fn properties() -> Result<WriterProperties, parquet::errors::ParquetError> {
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_created_by(concat!("lucca-sync ", env!("CARGO_PKG_VERSION")).to_owned())
        .build())
}

impl ParquetLoad {
    /// Takes the directory's lock, clears staging left by a killed run and
    /// creates this run's staging directory.
    pub fn open(dir: &Path, run_id: &str) -> Result<Self, LoadError> {
        let io = |action: &str, path: &Path, e| LoadError::Io {
            action: action.to_owned(),
            path: path.to_path_buf(),
            source: e,
        };
        fs::create_dir_all(dir).map_err(|e| io("create the directory", dir, e))?;
        let lock = DestinationLock::acquire(&dir.join(".lucca-sync.lock"))?;
        if let Ok(entries) = fs::read_dir(dir) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with(".staging-") {
                    tracing::info!(dir = %entry.path().display(), "removing the staging directory of an interrupted run");
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
        let staging = dir.join(format!(".staging-{run_id}"));
        fs::create_dir_all(&staging)
            .map_err(|e| io("create the staging directory", &staging, e))?;
        let states = match fs::read(dir.join(STATE_FILE)) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| LoadError::Io {
                action: "read the state file".into(),
                path: dir.join(STATE_FILE),
                source: std::io::Error::other(e),
            })?,
            Err(_) => BTreeMap::new(),
        };
        Ok(ParquetLoad {
            dir: dir.to_path_buf(),
            staging,
            writers: HashMap::new(),
            committed: Vec::new(),
            states,
            _lock: lock,
        })
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
                    .map_err(Self::parquet_err(&part, "finish a part file"))?;
            }
            let part = staging.join(format!("{stream}.part{}.parquet", file.parts.len()));
            let handle = File::create(&part).map_err(|e| LoadError::Io {
                action: "create".into(),
                path: part.clone(),
                source: e,
            })?;
            let props = properties().map_err(Self::parquet_err(&part, "configure the writer"))?;
            let writer = ArrowWriter::try_new(handle, Arc::clone(&schema), Some(props))
                .map_err(Self::parquet_err(&part, "start writing"))?;
            file.parts.push(part);
            file.writer = Some(writer);
            file.schema = Some(schema);
        }
        let part = file.parts.last().cloned().unwrap_or_default();
        if let Some(writer) = file.writer.as_mut() {
            writer.write(batch).map_err(Self::parquet_err(
                &part,
                &format!("write rows of stream `{stream}`"),
            ))?;
        }
        file.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Finishes the stream's file in staging (merging its parts into the
    /// final schema if it grew; for `append` and `merge`, combining it with
    /// the published file) and marks it for publishing with its state.
    pub fn commit_stream(&mut self, stream: &str, commit: &StreamCommit) -> Result<u64, LoadError> {
        let Some(mut file) = self.writers.remove(stream) else {
            return Ok(0);
        };
        let fresh = self.staging.join(format!("{stream}.new.parquet"));
        if let Some(writer) = file.writer.take() {
            let part = file.parts.last().cloned().unwrap_or_default();
            writer
                .close()
                .map_err(Self::parquet_err(&part, "finish a part file"))?;
        }
        let Some(schema) = file.schema.clone() else {
            return Ok(0);
        };
        let mut sources: Vec<Source> = Vec::new();
        let published = self.dir.join(format!("{stream}.parquet"));
        let new_rows: Vec<PathBuf> = if file.parts.len() == 1 {
            let only = file.parts.remove(0);
            fs::rename(&only, &fresh).map_err(|e| LoadError::Io {
                action: "rename".into(),
                path: only.clone(),
                source: e,
            })?;
            vec![fresh.clone()]
        } else {
            file.parts.clone()
        };
        let target = self.staging.join(format!("{stream}.parquet"));
        match commit.write_mode {
            WriteMode::Replace => {
                if new_rows.len() == 1 && new_rows[0] == fresh {
                    fs::rename(&fresh, &target).map_err(|e| LoadError::Io {
                        action: "rename".into(),
                        path: fresh.clone(),
                        source: e,
                    })?;
                } else {
                    sources.extend(new_rows.iter().map(|p| Source::all(p)));
                    combine(&sources, &schema, &target)?;
                }
            }
            WriteMode::Append | WriteMode::Merge => {
                let skip = if commit.write_mode == WriteMode::Merge {
                    Some(primary_keys(&new_rows, &commit.primary_key)?)
                } else {
                    None
                };
                if published.exists() {
                    sources.push(Source {
                        path: published.clone(),
                        skip_keys: skip.map(|keys| (commit.primary_key.clone(), keys)),
                        tag: None,
                    });
                }
                let tag = (commit.write_mode == WriteMode::Append).then(|| commit.run_id.clone());
                for p in &new_rows {
                    sources.push(Source {
                        path: p.clone(),
                        skip_keys: None,
                        tag: tag.clone(),
                    });
                }
                let mut final_schema: Vec<arrow::datatypes::FieldRef> =
                    schema.fields().iter().cloned().collect();
                if tag.is_some() {
                    final_schema.push(Arc::new(arrow::datatypes::Field::new(
                        RUN_ID_COLUMN,
                        arrow::datatypes::DataType::Utf8,
                        true,
                    )));
                }
                let union = union_schema(
                    published.exists().then_some(published.as_path()),
                    final_schema,
                )?;
                combine(&sources, &union, &target)?;
            }
        }
        for p in new_rows.iter().chain(file.parts.iter()) {
            let _ = fs::remove_file(p);
        }
        if let Some((field, cursor)) = &commit.state {
            self.states.insert(
                state_key(&commit.pipeline, stream),
                StreamState {
                    cursor_field: field.clone(),
                    cursor: cursor.clone(),
                    run_id: commit.run_id.clone(),
                },
            );
        }
        self.committed.push(stream.to_owned());
        Ok(file.rows)
    }

    /// The stored cursor of an incremental stream, if any.
    pub fn read_state(&self, pipeline: &str, stream: &str) -> Option<String> {
        self.states
            .get(&state_key(pipeline, stream))
            .map(|s| s.cursor.clone())
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

    /// Renames each committed file into place (each rename is atomic), then
    /// removes the staging directory.
    pub fn publish(self) -> Result<(), LoadError> {
        for stream in &self.committed {
            let from = self.staging.join(format!("{stream}.parquet"));
            let to = self.dir.join(format!("{stream}.parquet"));
            File::open(&from)
                .and_then(|f| f.sync_all())
                .and_then(|()| fs::rename(&from, &to))
                .map_err(|e| LoadError::Io {
                    action: "publish".into(),
                    path: to.clone(),
                    source: e,
                })?;
            sync_dir(&to);
        }
        if !self.committed.is_empty() && !self.states.is_empty() {
            let from = self.staging.join(STATE_FILE);
            let to = self.dir.join(STATE_FILE);
            let text = serde_json::to_vec_pretty(&self.states).unwrap_or_default();
            fs::write(&from, text)
                .and_then(|()| File::open(&from).and_then(|f| f.sync_all()))
                .and_then(|()| fs::rename(&from, &to))
                .map_err(|e| LoadError::Io {
                    action: "publish the state file".into(),
                    path: to.clone(),
                    source: e,
                })?;
            sync_dir(&to);
        }
        let _ = fs::remove_dir_all(&self.staging);
        Ok(())
    }

    /// Leaves the directory as it was.
    pub fn abandon(self) {
        drop(self.writers);
        let _ = fs::remove_dir_all(&self.staging);
    }
}

/// One input of [`combine`].
struct Source {
    path: PathBuf,
    /// Rows whose key (these columns) is in the set are left out (merge).
    skip_keys: Option<(Vec<String>, HashSet<String>)>,
    /// Adds the run id column with this value (append).
    tag: Option<String>,
}

impl Source {
    fn all(path: &Path) -> Self {
        Source {
            path: path.to_path_buf(),
            skip_keys: None,
            tag: None,
        }
    }
}

fn open_batches(
    path: &Path,
) -> Result<parquet::arrow::arrow_reader::ParquetRecordBatchReader, LoadError> {
    let reader = File::open(path).map_err(|e| LoadError::Io {
        action: "open".into(),
        path: path.to_path_buf(),
        source: e,
    })?;
    ParquetRecordBatchReaderBuilder::try_new(reader)
        .and_then(|b| b.build())
        .map_err(ParquetLoad::parquet_err(path, "read"))
}

/// The key of each row as text (`a|b` for composite keys).
fn row_keys(
    batch: &RecordBatch,
    columns: &[String],
    path: &Path,
) -> Result<Vec<String>, LoadError> {
    let mut parts = Vec::new();
    for c in columns {
        let array = batch.column_by_name(c).ok_or_else(|| LoadError::Parquet {
            path: path.to_path_buf(),
            context: format!("merge on primary key column `{c}`"),
            source: parquet::errors::ParquetError::General(format!("no column `{c}`")),
        })?;
        let text = arrow::compute::cast(array, &arrow::datatypes::DataType::Utf8).map_err(|e| {
            LoadError::Parquet {
                path: path.to_path_buf(),
                context: format!("read primary key column `{c}`"),
                source: e.into(),
            }
        })?;
        parts.push(text);
    }
    Ok((0..batch.num_rows())
        .map(|row| {
            parts
                .iter()
                .map(|a| a.as_string::<i32>().value(row).to_owned())
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect())
}

/// Every key of the new rows of a merge.
fn primary_keys(paths: &[PathBuf], columns: &[String]) -> Result<HashSet<String>, LoadError> {
    let mut keys = HashSet::new();
    for path in paths {
        for batch in open_batches(path)? {
            let batch = batch.map_err(|e| LoadError::Parquet {
                path: path.clone(),
                context: "read".into(),
                source: e.into(),
            })?;
            keys.extend(row_keys(&batch, columns, path)?);
        }
    }
    Ok(keys)
}

/// The published file's columns first, then the new ones.
fn union_schema(
    published: Option<&Path>,
    new: Vec<arrow::datatypes::FieldRef>,
) -> Result<SchemaRef, LoadError> {
    let mut fields: Vec<arrow::datatypes::FieldRef> = match published {
        Some(path) => {
            let file = File::open(path).map_err(|e| LoadError::Io {
                action: "open".into(),
                path: path.to_path_buf(),
                source: e,
            })?;
            ParquetRecordBatchReaderBuilder::try_new(file)
                .map_err(ParquetLoad::parquet_err(path, "read the schema"))?
                .schema()
                .fields()
                .iter()
                .cloned()
                .collect()
        }
        None => Vec::new(),
    };
    for field in new {
        if !fields.iter().any(|f| f.name() == field.name()) {
            fields.push(field);
        }
    }
    Ok(Arc::new(arrow::datatypes::Schema::new(fields)))
}

/// Writes the sources, in order, into one file of `schema`, batch by batch
/// (memory stays flat): missing columns become nulls, columns are matched
/// by name and cast to the target type.
fn combine(sources: &[Source], schema: &SchemaRef, target: &Path) -> Result<(), LoadError> {
    let err = ParquetLoad::parquet_err;
    let handle = File::create(target).map_err(|e| LoadError::Io {
        action: "create".into(),
        path: target.to_path_buf(),
        source: e,
    })?;
    let props = properties().map_err(err(target, "configure the writer"))?;
    let mut writer = ArrowWriter::try_new(handle, Arc::clone(schema), Some(props))
        .map_err(err(target, "start writing"))?;
    for source in sources {
        for batch in open_batches(&source.path)? {
            let widen = |e: arrow::error::ArrowError| LoadError::Parquet {
                path: source.path.clone(),
                context: "widen rows to the table's columns".into(),
                source: e.into(),
            };
            let mut batch = batch.map_err(widen)?;
            if let Some((columns, skip)) = &source.skip_keys {
                let keys = row_keys(&batch, columns, &source.path)?;
                let keep: arrow::array::BooleanArray =
                    keys.iter().map(|k| Some(!skip.contains(k))).collect();
                batch = arrow::compute::filter_record_batch(&batch, &keep).map_err(widen)?;
            }
            let rows = batch.num_rows();
            let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
            for field in schema.fields() {
                let column = match batch.column_by_name(field.name()) {
                    Some(array) => arrow::compute::cast(array, field.data_type()).map_err(widen)?,
                    None if field.name() == RUN_ID_COLUMN && source.tag.is_some() => {
                        let tag = source.tag.clone().unwrap_or_default();
                        Arc::new(arrow::array::StringArray::from(vec![tag; rows])) as ArrayRef
                    }
                    None => new_null_array(field.data_type(), rows),
                };
                columns.push(column);
            }
            let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(rows));
            let widened = RecordBatch::try_new_with_options(Arc::clone(schema), columns, &options)
                .map_err(widen)?;
            writer.write(&widened).map_err(err(target, "write rows"))?;
        }
    }
    writer.close().map_err(err(target, "finish"))?;
    Ok(())
}
