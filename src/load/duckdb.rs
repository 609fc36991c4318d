//! The DuckDB loader. A run never writes the live database file: it copies
//! it to a temporary file next to it, loads each stream into a stage table
//! there, swaps the stage table in within one transaction once the stream is
//! complete, and at the end renames the temporary file over the live one.
//! Readers holding the old file open keep reading the old data; a failed or
//! killed run leaves the live file exactly as it was. The cost: one copy of
//! the database file per run (a reflink on filesystems that support it).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, Field, TimeUnit};
use duckdb::Connection;

use super::{
    LATEST_RUNS_VIEW, LoadError, LoadOptions, MOSTLY_DISTINCT, RUN_ID_COLUMN, RUNS_TABLE,
    RunRecord, STATE_TABLE, StreamCommit, TableColumns, VersionKey, distinct_share,
    lock::DestinationLock, run_history_batch, sync_dir,
};
use crate::pipeline::WriteMode;

/// Storage format of new database files: readable by every DuckDB since
/// 1.0.0 (June 2024), the versions BI tools and older Python environments
/// still ship. A file created by an earlier lucca-sync keeps its format.
pub const STORAGE_COMPATIBILITY: &str = "v1.0.0";

/// Rows per row group of the tables lucca-sync writes (DuckDB's default is
/// 122,880). DuckDB compresses a row group when it is full, or else at the
/// commit, and rewrites a whole row group that gains rows: with its default,
/// a table of up to 122,880 rows was compressed only after the last page,
/// about 0.2 s per 100,000 users. A quarter of that size lets each full row
/// group be compressed while the next pages are still on the way, so the
/// run ends about 0.15 s sooner against a distant tenant (README,
/// Benchmarks); the file is about 8% larger and opens in DuckDB 1.0.
pub const ROW_GROUP_ROWS: u32 = 30_720;

/// The catalog name of the working copy in lucca-sync's DuckDB instance
/// (readers of the file see it under their own name).
const WORKING_COPY: &str = "lucca_sync_working_copy";

/// Half of a DuckDB memory size such as `32MB` or `1GiB`, in KiB; `None`
/// for a form this does not read (DuckDB then gets the whole of it).
fn half_of(size: &str) -> Option<String> {
    let size = size.trim();
    let split = size
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(size.len());
    let number: f64 = size[..split].parse().ok()?;
    let unit: u64 = match size[split..].trim().to_ascii_lowercase().as_str() {
        "b" | "" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => return None,
    };
    let kib = (number * unit as f64 / 2.0 / 1024.0).floor();
    (kib >= 1.0).then(|| format!("{kib}KiB"))
}

/// `'text'` with inner quotes doubled.
fn sql_string(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A load in progress into one DuckDB file.
pub struct DuckdbLoad {
    live: PathBuf,
    temp: PathBuf,
    conn: Option<Connection>,
    stages: HashMap<String, StageTable>,
    /// Whether a transaction is open: stage tables are filled inside one,
    /// which `commit_stream` ends. DuckDB then writes the staged rows
    /// once, compressed, into the working copy, instead of into its WAL
    /// at every append and again at each checkpoint.
    in_transaction: bool,
    /// The error that rolled the working copy back and closed it: what
    /// comes after fails with it as the reason.
    closed_by: Option<String>,
    /// `duckdb_memory_limit`, once DuckDB was given less while staging:
    /// restored before the first `append` or `merge` publish.
    held_back_memory: Option<String>,
    _lock: DestinationLock,
}

struct StageTable {
    name: String,
    columns: Vec<String>,
    /// The encodings declared for its columns (see [`encoding`]), which
    /// a table created from it in `append` or `merge` mode keeps.
    encodings: HashMap<String, &'static str>,
    rows: u64,
}

/// `"name"` with inner quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The DuckDB type of an Arrow type produced by the transform.
pub fn sql_type(ty: &DataType) -> String {
    match ty {
        DataType::Int64 => "BIGINT".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Date32 => "DATE".into(),
        DataType::Decimal128(precision, scale) => format!("DECIMAL({precision},{scale})"),
        DataType::Timestamp(TimeUnit::Microsecond, None) => "TIMESTAMP".into(),
        DataType::Timestamp(_, Some(_)) => "TIMESTAMPTZ".into(),
        _ => "VARCHAR".into(),
    }
}

impl DuckdbLoad {
    /// Takes the destination's lock, clears what a killed run left behind
    /// and prepares the temporary copy.
    pub fn open(live: &Path, run_id: &str, options: &LoadOptions) -> Result<Self, LoadError> {
        let io = |action: &str, path: &Path, e: std::io::Error| LoadError::Io {
            action: action.to_owned(),
            path: path.to_path_buf(),
            source: e,
        };
        if let Some(dir) = live.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|e| io("create the directory", dir, e))?;
        }
        // A link to the file: the file it leads to is the one replaced
        // (and locked), not the link.
        let live = &resolve_links(live);
        let lock = DestinationLock::acquire(&lock_path(live))?;
        remove_leftovers(live);
        let temp = temp_path(live, run_id);
        if live.exists() {
            settle_live_file(live)?;
            fs::copy(live, &temp).map_err(|e| io("copy the database to", &temp, e))?;
        }
        let (conn, held_back_memory) = match start_duckdb(live, &temp, options) {
            Ok(started) => started,
            Err(e) => {
                remove_working_copy(&temp);
                return Err(e);
            }
        };
        Ok(DuckdbLoad {
            live: live.to_path_buf(),
            temp,
            conn: Some(conn),
            stages: HashMap::new(),
            in_transaction: false,
            closed_by: None,
            held_back_memory,
            _lock: lock,
        })
    }

    fn conn(&self) -> Result<&Connection, LoadError> {
        self.conn.as_ref().ok_or_else(|| LoadError::Closed {
            path: self.live.clone(),
            reason: self.closed_by.clone().unwrap_or_default(),
        })
    }

    /// After a failed statement: if DuckDB aborted the open transaction
    /// (any error inside one does), everything staged in it since the last
    /// commit is gone, other streams' rows included, so the working copy is
    /// rolled back and closed and the run fails as a whole, naming this
    /// first error rather than DuckDB's "transaction is aborted".
    fn close_if_aborted(&mut self, error: LoadError) -> LoadError {
        let aborted = self.in_transaction
            && self
                .conn
                .as_ref()
                .is_some_and(|conn| conn.execute_batch("SELECT 1;").is_err());
        if aborted {
            self.roll_back_and_close(&error);
        }
        error
    }

    /// Rolls back what is staged since the last commit and closes the
    /// working copy; later steps fail naming `error`.
    fn roll_back_and_close(&mut self, error: &LoadError) {
        if let Some(conn) = self.conn.take() {
            let _ = conn.execute_batch("ROLLBACK;");
        }
        self.in_transaction = false;
        self.closed_by = Some(error.to_string());
    }

    fn sql(&self, context: &str, sql: &str) -> Result<(), LoadError> {
        let started = std::time::Instant::now();
        self.conn()?
            .execute_batch(sql)
            .map_err(|e| LoadError::Duckdb {
                path: self.live.clone(),
                context: context.to_owned(),
                source: e,
            })?;
        tracing::debug!(
            file = %self.live.display(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "duckdb: {context}"
        );
        Ok(())
    }

    /// Appends a batch to the stream's stage table, creating it or adding
    /// the batch's new columns first.
    pub fn write(&mut self, stream: &str, batch: &RecordBatch) -> Result<(), LoadError> {
        self.stage(stream, batch)
            .map_err(|error| self.close_if_aborted(error))
    }

    fn stage(&mut self, stream: &str, batch: &RecordBatch) -> Result<(), LoadError> {
        if !self.in_transaction {
            self.sql("begin a transaction", "BEGIN TRANSACTION;")?;
            self.in_transaction = true;
        }
        let schema = batch.schema();
        if !self.stages.contains_key(stream) {
            let name = format!("_lucca_sync_stage_{stream}");
            let encodings: HashMap<String, &'static str> = schema
                .fields()
                .iter()
                .zip(batch.columns())
                .filter_map(|(f, column)| Some((f.name().clone(), encoding(f, column)?)))
                .collect();
            let definitions = schema
                .fields()
                .iter()
                .map(|f| {
                    column_def(
                        f.name(),
                        &sql_type(f.data_type()),
                        encodings.get(f.name()).copied(),
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            self.sql(
                &format!("create the stage table of stream `{stream}`"),
                &format!(
                    "DROP TABLE IF EXISTS {q}; CREATE TABLE {q} ({definitions});",
                    q = quote_ident(&name),
                ),
            )?;
            let columns = schema.fields().iter().map(|f| f.name().clone()).collect();
            self.stages.insert(
                stream.to_owned(),
                StageTable {
                    name,
                    columns,
                    encodings,
                    rows: 0,
                },
            );
        }
        let (name, known) = match self.stages.get(stream) {
            Some(stage) => (stage.name.clone(), stage.columns.len()),
            None => return Ok(()),
        };
        if schema.fields().len() > known {
            // The transform only ever adds columns at the end.
            let added: Vec<String> = schema.fields()[known..]
                .iter()
                .map(|f| {
                    format!(
                        "ALTER TABLE {} ADD COLUMN {} {};",
                        quote_ident(&name),
                        quote_ident(f.name()),
                        sql_type(f.data_type())
                    )
                })
                .collect();
            self.sql(
                &format!("add new columns to stream `{stream}`"),
                &added.concat(),
            )?;
            if let Some(stage) = self.stages.get_mut(stream) {
                stage.columns = schema.fields().iter().map(|f| f.name().clone()).collect();
            }
        }
        let duck_err = |e| LoadError::Duckdb {
            path: self.live.clone(),
            context: format!("append rows of stream `{stream}`"),
            source: e,
        };
        {
            let mut appender = self.conn()?.appender(&name).map_err(duck_err)?;
            appender
                .append_record_batch(batch.clone())
                .map_err(duck_err)?;
            appender.flush().map_err(duck_err)?;
        }
        if let Some(stage) = self.stages.get_mut(stream) {
            stage.rows += batch.num_rows() as u64;
        }
        Ok(())
    }

    /// Publishes a completed stream inside the working copy, in one
    /// transaction with its incremental state: `replace` swaps the stage
    /// table in, `append` adds its rows tagged with the run id, `merge`
    /// upserts them on the primary key.
    pub fn commit_stream(&mut self, stream: &str, commit: &StreamCommit) -> Result<u64, LoadError> {
        self.commit_staged(stream, commit)
            .map_err(|error| self.close_if_aborted(error))
    }

    fn commit_staged(&mut self, stream: &str, commit: &StreamCommit) -> Result<u64, LoadError> {
        let table = quote_ident(stream);
        let parent_rows = self.parent_rows_filter(commit);
        let Some(stage) = self.stages.remove(stream) else {
            // No record this run: a replaced table is emptied (its columns
            // stay); append has nothing to add; a merged child table loses
            // the items of the parent records rewritten.
            let exists = !self.table_columns(stream)?.is_empty();
            if commit.write_mode == WriteMode::Replace && exists {
                self.sql(
                    &format!("empty table `{stream}`"),
                    &format!("DELETE FROM {table};"),
                )?;
            } else if commit.write_mode == WriteMode::Merge
                && exists
                && let Some(filter) = parent_rows
            {
                self.sql(
                    &format!("remove the replaced items of table `{stream}`"),
                    &format!("DELETE FROM {table} t WHERE {filter};"),
                )?;
            }
            return Ok(0);
        };
        let comments = comment_sql(stream, &stage.columns, commit);
        let stage_name = quote_ident(&stage.name);
        let mut written = stage.rows;
        let mut sql = String::new();
        if !self.in_transaction {
            sql.push_str("BEGIN TRANSACTION;");
        }
        match commit.write_mode {
            WriteMode::Replace => {
                sql.push_str(&format!(
                    "DROP TABLE IF EXISTS {table}; ALTER TABLE {stage_name} RENAME TO {table};"
                ));
            }
            WriteMode::Append | WriteMode::Merge => {
                // Joins and deduplication over the whole stream.
                if let Some(limit) = self.held_back_memory.take() {
                    self.sql(
                        "set memory_limit (setting duckdb_memory_limit)",
                        &format!("SET memory_limit = {};", sql_string(&limit)),
                    )?;
                }
                if commit.write_mode == WriteMode::Append {
                    self.sql(
                        "tag appended rows",
                        &format!(
                            "ALTER TABLE {stage_name} ADD COLUMN {} VARCHAR DEFAULT '{}';",
                            quote_ident(RUN_ID_COLUMN),
                            commit.run_id.replace('\'', "''")
                        ),
                    )?;
                }
                let existing = self.table_columns(stream)?;
                let staged = self.table_columns(&stage.name)?;
                if existing.is_empty() {
                    // The stage's columns, with the encodings judged on its
                    // first batch: later runs append and merge into them.
                    let columns = staged
                        .iter()
                        .map(|(name, ty)| column_def(name, ty, stage.encodings.get(name).copied()))
                        .collect::<Vec<_>>()
                        .join(", ");
                    sql.push_str(&format!("CREATE TABLE {table} ({columns});"));
                }
                for (name, ty) in staged {
                    if !existing.iter().any(|(n, _)| *n == name) && !existing.is_empty() {
                        sql.push_str(&format!(
                            "ALTER TABLE {table} ADD COLUMN {} {ty};",
                            quote_ident(&name)
                        ));
                    }
                }
                if commit.write_mode == WriteMode::Merge && commit.parent.is_some() {
                    // A child table: the parent records rewritten by this
                    // run get exactly their new items.
                    if let Some(filter) = &parent_rows {
                        sql.push_str(&format!("DELETE FROM {table} t WHERE {filter};"));
                    }
                    sql.push_str(&format!(
                        "INSERT INTO {table} BY NAME SELECT * FROM {stage_name};"
                    ));
                } else if commit.write_mode == WriteMode::Merge {
                    let matches = commit
                        .primary_key
                        .iter()
                        // A null key part is a value, as in a Parquet merge
                        // (and the `GROUP BY` that finds keys staged twice).
                        .map(|c| format!("s.{c} IS NOT DISTINCT FROM t.{c}", c = quote_ident(c)))
                        .collect::<Vec<_>>()
                        .join(" AND ");
                    let partition = commit
                        .primary_key
                        .iter()
                        .map(|c| quote_ident(c))
                        .collect::<Vec<_>>()
                        .join(", ");
                    // A key staged twice (a record that moved between pages)
                    // keeps its last version. The window that picks it holds
                    // every column of the stream: a 1M-record merge spent
                    // 4.5 of its 7.8 s there, so it only runs when a key
                    // is staged twice.
                    let superseded = self.superseded_rows(&stage_name, &partition)?;
                    written -= superseded;
                    let last_version = if superseded > 0 {
                        format!(
                            " QUALIFY row_number() OVER (PARTITION BY {partition} ORDER BY rowid DESC) = 1"
                        )
                    } else {
                        String::new()
                    };
                    sql.push_str(&format!(
                        "DELETE FROM {table} t WHERE EXISTS (SELECT 1 FROM {stage_name} s WHERE {matches});\
                         INSERT INTO {table} BY NAME SELECT * FROM {stage_name}{last_version};"
                    ));
                } else if let Some(read_again) =
                    self.read_again_filter(stream, &stage.name, commit)?
                {
                    // An incremental append: the rows of record versions
                    // the table already has were read again.
                    written -= self.count(&format!(
                        "SELECT count(*) FROM {stage_name} s WHERE {read_again}"
                    ))?;
                    sql.push_str(&format!(
                        "INSERT INTO {table} BY NAME SELECT * FROM {stage_name} s WHERE NOT {read_again};"
                    ));
                } else {
                    sql.push_str(&format!(
                        "INSERT INTO {table} BY NAME SELECT * FROM {stage_name};"
                    ));
                }
                sql.push_str(&format!("DROP TABLE {stage_name};"));
            }
        }
        if let Some((field, cursor)) = &commit.state {
            // No PRIMARY KEY: DuckDB 1.0 cannot open a file whose table has
            // one (written as storage version 1.0.0 by DuckDB 2). A table
            // made so by an earlier version is remade without it.
            if self.state_has_primary_key()? {
                sql.push_str(&format!(
                    "CREATE TABLE _lucca_sync_state_new AS SELECT * FROM {STATE_TABLE};\
                     DROP TABLE {STATE_TABLE};\
                     ALTER TABLE _lucca_sync_state_new RENAME TO {STATE_TABLE};"
                ));
            }
            let (pipeline, stream) = (sql_string(&commit.pipeline), sql_string(stream));
            sql.push_str(&format!(
                "CREATE TABLE IF NOT EXISTS {STATE_TABLE} (pipeline VARCHAR, stream VARCHAR, cursor_field VARCHAR, cursor VARCHAR, run_id VARCHAR, updated_at TIMESTAMPTZ);\
                 DELETE FROM {STATE_TABLE} WHERE pipeline = {pipeline} AND stream = {stream};\
                 INSERT INTO {STATE_TABLE} (pipeline, stream, cursor_field, cursor, run_id, updated_at) VALUES ({pipeline}, {stream}, {}, {}, {}, current_timestamp);",
                sql_string(field),
                sql_string(cursor),
                sql_string(&commit.run_id),
            ));
        }
        sql.push_str(&comments);
        sql.push_str("COMMIT;");
        self.in_transaction = false;
        if let Err(e) = self.sql(&format!("publish table `{stream}`"), &sql) {
            // The rollback also takes back what other streams staged since
            // the last commit: the working copy is closed, so that the run
            // fails as a whole and the live file stays as it was.
            self.roll_back_and_close(&e);
            return Err(e);
        }
        Ok(written)
    }

    /// True when the state table was made with a PRIMARY KEY (before
    /// session 12), which DuckDB 1.0 cannot read.
    fn state_has_primary_key(&self) -> Result<bool, LoadError> {
        self.conn()?
            .query_row(
                &format!(
                    "SELECT count(*) FROM duckdb_constraints() WHERE table_name = '{STATE_TABLE}' \
                     AND constraint_type = 'PRIMARY KEY'"
                ),
                [],
                |row| row.get::<_, i64>(0),
            )
            .map(|n| n > 0)
            .map_err(|source| LoadError::Duckdb {
                path: self.live.clone(),
                context: format!("read the constraints of {STATE_TABLE}"),
                source,
            })
    }

    /// The rows of a stage table that a later row of the same key (the
    /// quoted, comma-separated `key` columns) supersedes: 0 when every key
    /// is staged once.
    fn superseded_rows(&self, stage: &str, key: &str) -> Result<u64, LoadError> {
        self.count(&format!(
            "SELECT coalesce(sum(n - 1), 0)::BIGINT FROM \
             (SELECT count(*) AS n FROM {stage} GROUP BY {key} HAVING count(*) > 1)"
        ))
    }

    /// The number a counting query returns.
    fn count(&self, sql: &str) -> Result<u64, LoadError> {
        self.conn()?
            .query_row(sql, [], |row| row.get::<_, i64>(0))
            .map(|rows| u64::try_from(rows).unwrap_or(0))
            .map_err(|source| LoadError::Duckdb {
                path: self.live.clone(),
                context: format!("count rows ({sql})"),
                source,
            })
    }

    /// For a merged child table whose parent staged rows: the SQL condition
    /// on the child's rows (`t`) matching one of those parent records.
    fn parent_rows_filter(&self, commit: &StreamCommit) -> Option<String> {
        let link = commit.parent.as_ref()?;
        let parent_stage = self.stages.get(&link.table)?;
        let matches = item_of(link, "s", "t");
        Some(format!(
            "EXISTS (SELECT 1 FROM {} s WHERE {matches})",
            quote_ident(&parent_stage.name)
        ))
    }

    /// For an append that reads records again (see
    /// [`StreamCommit::version_key`]): the SQL condition on a staged row
    /// (`s`) that it is a record version the table already has, or, in a
    /// child table, an item of one. `None` when nothing is to be left out
    /// (no version key, or a table without its columns).
    fn read_again_filter(
        &self,
        stream: &str,
        stage: &str,
        commit: &StreamCommit,
    ) -> Result<Option<String>, LoadError> {
        let same = |key: &[String], a: &str, b: &str| {
            key.iter()
                .map(|c| format!("{a}.{c} IS NOT DISTINCT FROM {b}.{c}", c = quote_ident(c)))
                .collect::<Vec<_>>()
                .join(" AND ")
        };
        // The version columns of `table` staged in `stage`, if `table` has
        // them all.
        let version_columns = |table: &str, stage: &str, key: &VersionKey| {
            let staged: Vec<String> = self
                .table_columns(stage)?
                .into_iter()
                .map(|(c, _)| c)
                .collect();
            let Some(columns) = key.columns(&staged) else {
                return Ok(None);
            };
            let existing = self.table_columns(table)?;
            let has_all = columns.iter().all(|k| existing.iter().any(|(c, _)| c == k));
            Ok::<_, LoadError>((has_all && !columns.is_empty()).then_some(columns))
        };
        if commit.version_key != VersionKey::None {
            let Some(columns) = version_columns(stream, stage, &commit.version_key)? else {
                return Ok(None);
            };
            return Ok(Some(format!(
                "EXISTS (SELECT 1 FROM {} t WHERE {})",
                quote_ident(stream),
                same(&columns, "s", "t")
            )));
        }
        let Some(link) = commit.parent_read_again() else {
            return Ok(None);
        };
        let Some(parent_stage) = self.stages.get(&link.table) else {
            return Ok(None);
        };
        let Some(columns) =
            version_columns(&link.table, &parent_stage.name, &link.parent_version_key)?
        else {
            return Ok(None);
        };
        let item_of = item_of(link, "p", "s");
        Ok(Some(format!(
            "EXISTS (SELECT 1 FROM {} p JOIN {} t ON {} WHERE {item_of})",
            quote_ident(&parent_stage.name),
            quote_ident(&link.table),
            same(&columns, "p", "t")
        )))
    }

    /// The stream's table and child tables in the working copy, with their
    /// columns.
    pub fn existing_tables(
        &self,
        stream: &str,
    ) -> Result<HashMap<String, TableColumns>, LoadError> {
        let conn = self.conn()?;
        let err = |e| LoadError::Duckdb {
            path: self.live.clone(),
            context: format!("read the tables of stream `{stream}`"),
            source: e,
        };
        let mut stmt = conn
            .prepare(
                "SELECT table_name, column_name, data_type FROM information_schema.columns \
                 WHERE table_catalog = current_database() AND table_schema = 'main'",
            )
            .map_err(err)?;
        let rows = stmt
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                ))
            })
            .map_err(err)?;
        let mut tables: HashMap<String, TableColumns> = HashMap::new();
        for row in rows {
            let (table, column, sql_type) = row.map_err(err)?;
            if super::belongs_to_stream(&table, stream) {
                tables
                    .entry(table)
                    .or_default()
                    .insert(column, arrow_type_of(&sql_type));
            }
        }
        Ok(tables)
    }

    /// The stored cursor of an incremental stream, if any.
    pub fn read_state(&self, pipeline: &str, stream: &str) -> Result<Option<String>, LoadError> {
        if self.table_columns(STATE_TABLE)?.is_empty() {
            return Ok(None);
        }
        let conn = self.conn()?;
        let err = |e| LoadError::Duckdb {
            path: self.live.clone(),
            context: format!("read the state of stream `{stream}`"),
            source: e,
        };
        let mut stmt = conn
            .prepare(&format!(
                "SELECT cursor FROM {STATE_TABLE} WHERE pipeline = ? AND stream = ?"
            ))
            .map_err(err)?;
        let mut rows = stmt.query([pipeline, stream]).map_err(err)?;
        match rows.next().map_err(err)? {
            Some(row) => row.get::<_, Option<String>>(0).map_err(err),
            None => Ok(None),
        }
    }

    /// Columns (name, type) of a table of the working copy; empty if absent.
    fn table_columns(&self, table: &str) -> Result<Vec<(String, String)>, LoadError> {
        let conn = self.conn()?;
        let err = |e| LoadError::Duckdb {
            path: self.live.clone(),
            context: format!("read the columns of `{table}`"),
            source: e,
        };
        let mut stmt = conn
            .prepare(
                "SELECT column_name, data_type FROM information_schema.columns \
                 WHERE table_catalog = current_database() AND table_schema = 'main' \
                 AND table_name = ? ORDER BY ordinal_position",
            )
            .map_err(err)?;
        let rows = stmt
            .query_map([table], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })
            .map_err(err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(err)
    }

    /// Drops what a failed stream staged; its table keeps the previous data.
    pub fn discard_stream(&mut self, stream: &str) -> Result<(), LoadError> {
        if let Some(stage) = self.stages.remove(stream) {
            self.sql(
                &format!("drop the stage table of stream `{stream}`"),
                &format!("DROP TABLE IF EXISTS {};", quote_ident(&stage.name)),
            )?;
        }
        Ok(())
    }

    /// Makes the run visible: the run history and its view, then
    /// checkpoint, close, fsync, rename over the live file. If any of it
    /// fails, the working copy is removed and the live file stays as it was.
    pub fn publish(mut self, history: &[RunRecord]) -> Result<(), LoadError> {
        match self.publish_working_copy(history) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.abandon();
                Err(e)
            }
        }
    }

    fn publish_working_copy(&mut self, history: &[RunRecord]) -> Result<(), LoadError> {
        if self.in_transaction {
            self.sql("commit", "COMMIT;")?;
            self.in_transaction = false;
        }
        if !history.is_empty() {
            let batch = run_history_batch(history).map_err(|source| LoadError::Arrow {
                path: self.live.clone(),
                context: "record the run history".into(),
                source,
            })?;
            self.write(RUNS_TABLE, &batch)?;
            let commit = StreamCommit {
                pipeline: history[0].pipeline.clone(),
                run_id: history[0].run_id.clone(),
                write_mode: WriteMode::Merge,
                primary_key: vec!["run_id".into(), "stream".into()],
                state: None,
                table_comment: "lucca-sync run history: one row per stream per run".into(),
                column_comments: Vec::new(),
                partition_by: Vec::new(),
                parent: None,
                version_key: VersionKey::None,
            };
            self.commit_stream(RUNS_TABLE, &commit)?;
            self.sql(
                "create the latest-runs view",
                &format!(
                    "CREATE OR REPLACE VIEW {LATEST_RUNS_VIEW} AS SELECT * FROM {RUNS_TABLE} \
                     QUALIFY row_number() OVER (PARTITION BY pipeline, stream \
                     ORDER BY started_at DESC, run_id DESC) = 1;"
                ),
            )?;
        }
        self.sql("checkpoint", "CHECKPOINT;")?;
        if let Some(conn) = self.conn.take() {
            conn.close().map_err(|(_, e)| LoadError::Duckdb {
                path: self.live.clone(),
                context: "close the working copy".into(),
                source: e,
            })?;
        }
        let io = |action: &str, path: &Path, e| LoadError::Io {
            action: action.to_owned(),
            path: path.to_path_buf(),
            source: e,
        };
        fs::File::open(&self.temp)
            .and_then(|f| f.sync_all())
            .map_err(|e| io("flush", &self.temp, e))?;
        fs::rename(&self.temp, &self.live)
            .map_err(|e| io("rename the working copy over", &self.live, e))?;
        sync_dir(&self.live);
        Ok(())
    }

    /// Leaves the live file untouched and removes the working copy.
    pub fn abandon(mut self) {
        drop(self.conn.take());
        remove_working_copy(&self.temp);
    }
}

/// `COMMENT ON` statements for a published table and those of its columns
/// that this run wrote.
fn comment_sql(stream: &str, columns: &[String], commit: &StreamCommit) -> String {
    let table = quote_ident(stream);
    let mut sql = String::new();
    if !commit.table_comment.is_empty() {
        sql.push_str(&format!(
            "COMMENT ON TABLE {table} IS {};",
            sql_string(&commit.table_comment)
        ));
    }
    for (column, text) in &commit.column_comments {
        if columns.contains(column) {
            sql.push_str(&format!(
                "COMMENT ON COLUMN {table}.{} IS {};",
                quote_ident(column),
                sql_string(text)
            ));
        }
    }
    sql
}

/// The encoding to declare for a column whose first values are `sample`.
/// DuckDB analyses every text column with each of its encodings before it
/// picks one, about a quarter of the loader thread's time in a 1M-record
/// load: a column whose sample is mostly distinct (e-mails, logins) is
/// declared FSST, one with few distinct values (departments) dictionary,
/// and DuckDB only weighs that one against no compression; the others are
/// left to DuckDB.
fn encoding(field: &Field, sample: &ArrayRef) -> Option<&'static str> {
    match (field.data_type(), distinct_share(sample.as_ref())) {
        (DataType::Utf8, Some(share)) if share > MOSTLY_DISTINCT => Some("fsst"),
        (DataType::Utf8, Some(share)) if share < 0.1 => Some("dictionary"),
        _ => None,
    }
}

/// A column definition: `"name" TYPE [USING COMPRESSION encoding]`.
fn column_def(name: &str, sql_type: &str, encoding: Option<&str>) -> String {
    match encoding {
        Some(encoding) => format!(
            "{} {sql_type} USING COMPRESSION {encoding}",
            quote_ident(name)
        ),
        None => format!("{} {sql_type}", quote_ident(name)),
    }
}

/// Starts lucca-sync's DuckDB instance on the working copy `temp` of
/// `live`; also returns the memory limit held back while staging.
fn start_duckdb(
    live: &Path,
    temp: &Path,
    options: &LoadOptions,
) -> Result<(Connection, Option<String>), LoadError> {
    let duck_err = |context: &str| duck_err(live, context);
    let config = duckdb::Config::default()
        .with("storage_compatibility_version", STORAGE_COMPATIBILITY)
        .map_err(duck_err("set the storage compatibility version"))?
        .with("memory_limit", &options.duckdb_memory_limit)
        .map_err(duck_err("set memory_limit (setting duckdb_memory_limit)"))?
        // Spilled buffers go next to the working copy (an in-memory
        // instance would put them in `./.tmp`, wherever the run is).
        .with("temp_directory", spill_path(temp).to_string_lossy())
        .map_err(duck_err("set temp_directory"))?
        // Write each row group out as soon as it is full, not five at
        // a time: the commit then only has the last one left.
        .with("write_buffer_row_group_count", "1")
        .map_err(duck_err("set write_buffer_row_group_count"))?
        .threads(1)
        .map_err(duck_err("set threads"))?;
    // The row group size is an option of ATTACH only, hence an
    // in-memory instance that attaches the working copy.
    let conn = Connection::open_in_memory_with_flags(config).map_err(duck_err("start DuckDB"))?;
    conn.execute_batch(&format!(
        "ATTACH {} AS {WORKING_COPY} (ROW_GROUP_SIZE {ROW_GROUP_ROWS}); USE {WORKING_COPY};",
        sql_string(&temp.to_string_lossy())
    ))
    .map_err(duck_err("open a working copy"))?;
    // Staging only needs the row groups being filled; beyond that
    // DuckDB would keep blocks it already wrote, which the run never
    // reads back (1M records per stream: 12 MB more at the peak).
    let held_back_memory = match half_of(&options.duckdb_memory_limit) {
        Some(half) => {
            conn.execute_batch(&format!("SET memory_limit = {};", sql_string(&half)))
                .map_err(duck_err("set memory_limit while staging"))?;
            Some(options.duckdb_memory_limit.clone())
        }
        None => None,
    };
    Ok((conn, held_back_memory))
}

/// The SQL condition that a child table's row (alias `child`) is an item
/// of a parent row (alias `parent`): its key columns hold the parent's key.
fn item_of(link: &super::ParentLink, parent: &str, child: &str) -> String {
    link.parent_key
        .iter()
        .zip(&link.child_key)
        .map(|(p, c)| {
            format!(
                "{parent}.{} IS NOT DISTINCT FROM {child}.{}",
                quote_ident(p),
                quote_ident(c)
            )
        })
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// Maps a DuckDB error on the file at `path` to the loader's error.
fn duck_err(path: &Path, context: &str) -> impl FnOnce(duckdb::Error) -> LoadError + use<> {
    let path = path.to_path_buf();
    let context = context.to_owned();
    move |source| LoadError::Duckdb {
        path,
        context,
        source,
    }
}

/// `path` with its symbolic links resolved (a file not there yet: its
/// directory's), so that the run replaces the file a link leads to.
fn resolve_links(path: &Path) -> PathBuf {
    if let Ok(real) = fs::canonicalize(path) {
        return real;
    }
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) if !dir.as_os_str().is_empty() => fs::canonicalize(dir)
            .map(|dir| dir.join(name))
            .unwrap_or_else(|_| path.to_path_buf()),
        _ => path.to_path_buf(),
    }
}

/// Readies the live file for its copy. Fails if another program has it
/// open for writing (DuckDB's own lock): what it writes after the copy
/// would be lost, and its write-ahead log (`{file}.wal`, named after the
/// path) would be replayed onto the file this run publishes. A write-ahead
/// log a program left behind (it died before its checkpoint) is folded into
/// the live file first, as any DuckDB client opening the file would do;
/// left there, it would be replayed onto the new file, deleting and
/// changing its rows.
fn settle_live_file(live: &Path) -> Result<(), LoadError> {
    let has_log = wal_path(live).exists();
    let duck_err = |context: &str| duck_err(live, context);
    let mode = if has_log {
        duckdb::AccessMode::ReadWrite
    } else {
        duckdb::AccessMode::ReadOnly
    };
    let config = duckdb::Config::default()
        .access_mode(mode)
        .and_then(|c| c.threads(1))
        .map_err(duck_err("configure DuckDB"))?;
    let conn = Connection::open_with_flags(live, config).map_err(|source| {
        if source.to_string().contains("Conflicting lock") {
            LoadError::InUse {
                path: live.to_path_buf(),
                reason: if has_log {
                    "another program has this DuckDB file open, and the write-ahead log a \
                     program left ({file}.wal) must be folded into it first"
                } else {
                    "another program has this DuckDB file open for writing (a BI tool or a \
                     script with a read-write connection; read-only readers do not block a run)"
                },
                source,
            }
        } else {
            LoadError::Duckdb {
                path: live.to_path_buf(),
                context: "open the file".into(),
                source,
            }
        }
    })?;
    if has_log {
        tracing::info!(file = %wal_path(live).display(), "folding the write-ahead log another program left into the file before copying it");
        conn.execute_batch("CHECKPOINT;").map_err(duck_err(
            "check the write-ahead log another program left in",
        ))?;
    }
    conn.close().map_err(|(_, source)| LoadError::Duckdb {
        path: live.to_path_buf(),
        context: "close the file".into(),
        source,
    })
}

/// Removes a working copy, its WAL and DuckDB's spill directory.
fn remove_working_copy(temp: &Path) {
    let _ = fs::remove_file(temp);
    let _ = fs::remove_file(wal_path(temp));
    let _ = fs::remove_dir_all(spill_path(temp));
}

fn lock_path(live: &Path) -> PathBuf {
    sibling(live, ".lock")
}

fn temp_path(live: &Path, run_id: &str) -> PathBuf {
    sibling(live, &format!(".tmp-{run_id}"))
}

fn wal_path(db: &Path) -> PathBuf {
    sibling(db, ".wal")
}

/// Where DuckDB spills buffers that exceed its memory limit.
fn spill_path(db: &Path) -> PathBuf {
    sibling(db, ".tmp")
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// Working copies of killed runs (only called while holding the lock).
fn remove_leftovers(live: &Path) {
    let Some(name) = live.file_name().and_then(|n| n.to_str()) else {
        return;
    };
    let dir = match live.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let prefix = format!("{name}.tmp-");
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                tracing::info!(file = %entry.path().display(), "removing the working copy of an interrupted run");
                // The working copy, its WAL, or DuckDB's spill directory.
                let _ = match entry.file_type() {
                    Ok(kind) if kind.is_dir() => fs::remove_dir_all(entry.path()),
                    _ => fs::remove_file(entry.path()),
                };
            }
        }
    }
}

/// The Arrow type lucca-sync writes as DuckDB's `sql_type` (as
/// `information_schema.columns` spells it), if it writes that type.
fn arrow_type_of(sql_type: &str) -> Option<DataType> {
    Some(match sql_type {
        "BIGINT" => DataType::Int64,
        "DOUBLE" => DataType::Float64,
        "BOOLEAN" => DataType::Boolean,
        "VARCHAR" => DataType::Utf8,
        "DATE" => DataType::Date32,
        "TIMESTAMP" => DataType::Timestamp(TimeUnit::Microsecond, None),
        "TIMESTAMP WITH TIME ZONE" => {
            DataType::Timestamp(TimeUnit::Microsecond, Some(std::sync::Arc::from("UTC")))
        }
        other => {
            let (precision, scale) = other
                .strip_prefix("DECIMAL(")?
                .strip_suffix(')')?
                .split_once(',')?;
            DataType::Decimal128(precision.trim().parse().ok()?, scale.trim().parse().ok()?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting(load: &DuckdbLoad, name: &str) -> String {
        load.conn()
            .and_then(|conn| {
                conn.query_row(&format!("SELECT current_setting('{name}')"), [], |row| {
                    row.get::<_, String>(0)
                })
                .map_err(|source| LoadError::Duckdb {
                    path: load.live.clone(),
                    context: name.to_owned(),
                    source,
                })
            })
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// A load of run `r1` into `l'hr.duckdb` (a quote, as in SQL strings)
    /// in a new directory.
    fn open_in_tempdir(memory_limit: &str) -> (tempfile::TempDir, PathBuf, DuckdbLoad) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let live = dir.path().join("l'hr.duckdb");
        let options = LoadOptions {
            duckdb_memory_limit: memory_limit.into(),
        };
        let load = DuckdbLoad::open(&live, "r1", &options).unwrap_or_else(|e| panic!("{e}"));
        (dir, live, load)
    }

    #[test]
    fn after_duckdb_aborts_the_transaction_every_later_step_names_the_first_error() {
        // Far less memory than one batch of 10,000 rows of 1 KB needs, and
        // a file where DuckDB would spill the rest.
        let (_dir, live, mut load) = open_in_tempdir("1MB");
        fs::write(spill_path(&load.temp), b"").unwrap_or_else(|e| panic!("{e}"));
        let wide = RecordBatch::try_from_iter([(
            "text",
            std::sync::Arc::new(arrow::array::StringArray::from_iter_values(
                (0..10_000).map(|i| format!("{i:01000}")),
            )) as arrow::array::ArrayRef,
        )])
        .unwrap_or_else(|e| panic!("{e}"));
        let first = match load.write("a", &wide) {
            Err(e) => e.to_string(),
            Ok(()) => panic!("10 MB of rows fitted in 1 MB without spilling"),
        };
        assert!(first.contains("append rows of stream `a`"), "{first}");
        let later = match load.commit_stream("b", &replace()) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("a stream was committed after the transaction was aborted"),
        };
        assert_eq!(
            later,
            format!(
                "{}: not written: an earlier error rolled this run's changes back: {first}",
                live.display()
            )
        );
        let working_copy = load.temp.clone();
        match load.publish(&[]) {
            Err(e) => assert_eq!(e.to_string(), later),
            Ok(()) => panic!("the run was published"),
        }
        assert!(!live.exists(), "the live file was written");
        assert!(!working_copy.exists(), "the working copy was left behind");
    }

    /// The text `sql` answers in the published file `live`.
    fn published_text(live: &Path, sql: &str) -> String {
        Connection::open(live)
            .and_then(|conn| conn.query_row(sql, [], |row| row.get(0)))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// How a stream of `replace` mode is committed.
    fn replace() -> StreamCommit {
        StreamCommit {
            pipeline: "p".into(),
            run_id: "r1".into(),
            ..StreamCommit::default()
        }
    }

    #[test]
    fn a_run_publishes_a_file_whose_name_has_a_quote() {
        let (_dir, live, mut load) = open_in_tempdir("16MB");
        let batch = RecordBatch::try_from_iter([(
            "id",
            std::sync::Arc::new(arrow::array::Int64Array::from(vec![1, 2, 3]))
                as arrow::array::ArrayRef,
        )])
        .unwrap_or_else(|e| panic!("{e}"));
        load.write("users", &batch)
            .unwrap_or_else(|e| panic!("{e}"));
        load.commit_stream("users", &replace())
            .unwrap_or_else(|e| panic!("{e}"));
        load.publish(&[]).unwrap_or_else(|e| panic!("{e}"));
        let rows: i64 = Connection::open(&live)
            .and_then(|conn| conn.query_row("SELECT sum(id) FROM users", [], |row| row.get(0)))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rows, 6);
    }

    #[test]
    fn a_merge_keeps_the_last_version_of_a_key_staged_twice() {
        for (ids, names, expected, written) in [
            (vec![1, 2, 2, 2], vec!["a", "b", "c", "d"], "1=a,2=d", 2),
            (vec![1, 2, 3], vec!["a", "b", "c"], "1=a,2=b,3=c", 3),
        ] {
            let (_dir, live, mut load) = open_in_tempdir("16MB");
            let batch = RecordBatch::try_from_iter([
                (
                    "id",
                    std::sync::Arc::new(arrow::array::Int64Array::from(ids))
                        as arrow::array::ArrayRef,
                ),
                (
                    "name",
                    std::sync::Arc::new(arrow::array::StringArray::from(names)) as _,
                ),
            ])
            .unwrap_or_else(|e| panic!("{e}"));
            load.write("users", &batch)
                .unwrap_or_else(|e| panic!("{e}"));
            let merge = StreamCommit {
                write_mode: WriteMode::Merge,
                primary_key: vec!["id".into()],
                ..replace()
            };
            let rows_written = load
                .commit_stream("users", &merge)
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(rows_written, written, "{expected}");
            load.publish(&[]).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                published_text(
                    &live,
                    "SELECT string_agg(id || '=' || name, ',' ORDER BY id) FROM users"
                ),
                expected
            );
        }
    }

    #[test]
    fn a_merge_matches_null_key_parts_as_parquet_does() {
        // A composite key with a null part, merged by two runs: one row,
        // as in a Parquet merge, not one more per run.
        let (dir, live, _) = open_in_tempdir("16MB");
        for (run, name) in [("r1", "first"), ("r2", "second")] {
            let options = LoadOptions {
                duckdb_memory_limit: "16MB".into(),
            };
            let mut load = DuckdbLoad::open(&live, run, &options).unwrap_or_else(|e| panic!("{e}"));
            let batch = RecordBatch::try_from_iter([
                (
                    "owner_id",
                    std::sync::Arc::new(arrow::array::Int64Array::from(vec![Some(1), Some(1)]))
                        as arrow::array::ArrayRef,
                ),
                (
                    "day",
                    std::sync::Arc::new(arrow::array::StringArray::from(vec![
                        None,
                        Some("2026-01-01"),
                    ])) as _,
                ),
                (
                    "name",
                    std::sync::Arc::new(arrow::array::StringArray::from(vec![name, name])) as _,
                ),
            ])
            .unwrap_or_else(|e| panic!("{e}"));
            load.write("entries", &batch)
                .unwrap_or_else(|e| panic!("{e}"));
            let merge = StreamCommit {
                write_mode: WriteMode::Merge,
                primary_key: vec!["owner_id".into(), "day".into()],
                run_id: run.into(),
                ..replace()
            };
            load.commit_stream("entries", &merge)
                .unwrap_or_else(|e| panic!("{e}"));
            load.publish(&[]).unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(
            published_text(
                &live,
                "SELECT string_agg(coalesce(day, '-') || '=' || name, ',' ORDER BY day NULLS FIRST) FROM entries"
            ),
            "-=second,2026-01-01=second"
        );
        drop(dir);
    }

    #[test]
    fn a_state_table_with_a_primary_key_is_remade_without_it() {
        // As made before session 12: DuckDB 1.0 cannot open such a file.
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let live = dir.path().join("hr.duckdb");
        Connection::open(&live)
            .and_then(|conn| {
                conn.execute_batch(&format!(
                    "CREATE TABLE {STATE_TABLE} (pipeline VARCHAR, stream VARCHAR, cursor_field VARCHAR, \
                     cursor VARCHAR, run_id VARCHAR, updated_at TIMESTAMPTZ DEFAULT current_timestamp, \
                     PRIMARY KEY (pipeline, stream));\
                     INSERT INTO {STATE_TABLE} (pipeline, stream, cursor_field, cursor, run_id) \
                     VALUES ('p', 'users', 'modifiedAt', '2020-01-01T00:00:00', 'r0'), \
                     ('p', 'other', 'modifiedAt', '2021-01-01T00:00:00', 'r0');"
                ))
            })
            .unwrap_or_else(|e| panic!("{e}"));
        let options = LoadOptions {
            duckdb_memory_limit: "16MB".into(),
        };
        let mut load = DuckdbLoad::open(&live, "r1", &options).unwrap_or_else(|e| panic!("{e}"));
        let batch = RecordBatch::try_from_iter([(
            "id",
            std::sync::Arc::new(arrow::array::Int64Array::from(vec![1])) as arrow::array::ArrayRef,
        )])
        .unwrap_or_else(|e| panic!("{e}"));
        load.write("users", &batch)
            .unwrap_or_else(|e| panic!("{e}"));
        let merge = StreamCommit {
            write_mode: WriteMode::Merge,
            primary_key: vec!["id".into()],
            state: Some(("modifiedAt".into(), "2026-01-01T00:00:00".into())),
            ..replace()
        };
        load.commit_stream("users", &merge)
            .unwrap_or_else(|e| panic!("{e}"));
        load.publish(&[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            published_text(
                &live,
                &format!(
                    "SELECT count(*)::VARCHAR FROM duckdb_constraints() WHERE table_name = '{STATE_TABLE}'"
                )
            ),
            "0"
        );
        assert_eq!(
            published_text(
                &live,
                &format!(
                    "SELECT string_agg(stream || '=' || cursor, ',' ORDER BY stream) FROM {STATE_TABLE}"
                )
            ),
            "other=2021-01-01T00:00:00,users=2026-01-01T00:00:00"
        );
    }

    #[test]
    fn a_destination_that_cannot_open_leaves_no_working_copy() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let live = dir.path().join("hr.duckdb");
        Connection::open(&live)
            .and_then(|c| c.execute_batch("CREATE TABLE t AS SELECT 1 AS x;"))
            .unwrap_or_else(|e| panic!("{e}"));
        let before = fs::read(&live).unwrap_or_default();
        let options = LoadOptions {
            duckdb_memory_limit: "a lot".into(),
        };
        match DuckdbLoad::open(&live, "r1", &options) {
            Err(e) => assert!(e.to_string().contains("duckdb_memory_limit"), "{e}"),
            Ok(_) => panic!("DuckDB took a memory limit of `a lot`"),
        }
        assert!(
            !temp_path(&live, "r1").exists(),
            "the working copy was left behind"
        );
        assert_eq!(fs::read(&live).unwrap_or_default(), before);
        // A file that is no DuckDB database fails before any copy, too.
        fs::write(&live, b"the previous data").unwrap_or_else(|e| panic!("{e}"));
        let options = LoadOptions {
            duckdb_memory_limit: "1GB".into(),
        };
        match DuckdbLoad::open(&live, "r2", &options) {
            Err(e) => assert!(e.to_string().contains("not a valid DuckDB database"), "{e}"),
            Ok(_) => panic!("opened a file that is no database"),
        }
        assert!(!temp_path(&live, "r2").exists());
        assert_eq!(fs::read(&live).unwrap_or_default(), b"the previous data");
    }

    #[test]
    fn staging_gets_half_of_the_memory_limit() {
        assert_eq!(half_of("32MB").as_deref(), Some("15625KiB"));
        assert_eq!(half_of(" 1 GiB ").as_deref(), Some("524288KiB"));
        assert_eq!(half_of("1.5gb").as_deref(), Some("732421KiB"));
        assert_eq!(half_of("80%"), None);
        assert_eq!(half_of("1KB"), None);
    }

    #[test]
    fn duckdb_spills_next_to_the_working_copy_within_the_memory_limit() {
        let (dir, _, load) = open_in_tempdir("16MB");
        assert_eq!(
            setting(&load, "temp_directory"),
            dir.path().join("l'hr.duckdb.tmp-r1.tmp").to_string_lossy()
        );
        assert_eq!(
            setting(&load, "memory_limit"),
            "7.6 MiB",
            "half while staging"
        );
        load.abandon();
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap_or_else(|e| panic!("{e}"))
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("l'hr.duckdb.lock")]);
    }
}
