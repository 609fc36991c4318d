//! Shared helpers of the integration tests: a sandbox on a random loopback
//! port, pipeline files in a temporary directory, and the real binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

use lucca_sync::sandbox::{Sandbox, SandboxConfig};

pub const KEY: &str = "test-key-0123456789";

pub async fn sandbox(config: SandboxConfig) -> Sandbox {
    Sandbox::start(SandboxConfig {
        api_key: KEY.into(),
        ..config
    })
    .await
    .unwrap_or_else(|e| panic!("sandbox: {e}"))
}

/// A pipeline file for the users endpoint with the given destination block
/// and extra stream lines.
pub fn users_pipeline(dir: &Path, destination: &str, stream_extra: &str) -> PathBuf {
    let text = format!(
        r#"version: 1
name: users
source:
  base_url: ${{LUCCA_BASE_URL}}
  api_key: ${{LUCCA_API_KEY}}
  rate_limit_per_minute: unlimited
streams:
  - name: users
    endpoint: /api/v3/users
    paging: v3
    params: {{ formerEmployees: "true" }}
    fields:
      - id
      - firstName
      - lastName
      - mail
      - birthDate
      - dtContractStart
      - dtContractEnd
      - modifiedAt
      - department[id,name]
      - manager[id,name]
      - legalEntityId
    primary_key: id
{stream_extra}
destination:
{destination}
"#
    );
    let path = dir.join("users.yaml");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    path
}

pub fn duckdb_destination(dir: &Path) -> (String, PathBuf) {
    let db = dir.join("out").join("lucca.duckdb");
    (format!("  duckdb: {{ path: {} }}", db.display()), db)
}

pub fn parquet_destination(dir: &Path) -> (String, PathBuf) {
    let out = dir.join("out").join("parquet");
    (format!("  parquet: {{ dir: {} }}", out.display()), out)
}

/// Runs the real binary with the sandbox's URL and the given key.
pub async fn lucca_sync(args: &[&str], base_url: &str, key: &str) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_lucca-sync"))
        .args(args)
        .env("LUCCA_BASE_URL", base_url)
        .env("LUCCA_API_KEY", key)
        .env("LUCCA_SYNC_RETRY_BACKOFF_MIN_MS", "20")
        .env("LUCCA_SYNC_RETRY_BACKOFF_MAX_MS", "200")
        .env("LUCCA_SYNC_LOG_FORMAT", "json")
        .env_remove("LUCCA_SYNC_LOG")
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run lucca-sync: {e}"))
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Reads one value from a DuckDB file (read-only, as a BI tool would).
pub fn query_i64(db: &Path, sql: &str) -> i64 {
    let config = duckdb::Config::default()
        .access_mode(duckdb::AccessMode::ReadOnly)
        .unwrap_or_else(|e| panic!("{e}"));
    let conn = duckdb::Connection::open_with_flags(db, config).unwrap_or_else(|e| panic!("{e}"));
    conn.query_row(sql, [], |row| row.get::<_, i64>(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

pub fn query_string(db: &Path, sql: &str) -> String {
    let config = duckdb::Config::default()
        .access_mode(duckdb::AccessMode::ReadOnly)
        .unwrap_or_else(|e| panic!("{e}"));
    let conn = duckdb::Connection::open_with_flags(db, config).unwrap_or_else(|e| panic!("{e}"));
    conn.query_row(sql, [], |row| row.get::<_, String>(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Every id of a table, sorted.
pub fn ids(db: &Path, table: &str) -> Vec<i64> {
    let config = duckdb::Config::default()
        .access_mode(duckdb::AccessMode::ReadOnly)
        .unwrap_or_else(|e| panic!("{e}"));
    let conn = duckdb::Connection::open_with_flags(db, config).unwrap_or_else(|e| panic!("{e}"));
    let mut stmt = conn
        .prepare(&format!("select id from {table} order by id"))
        .unwrap_or_else(|e| panic!("{e}"));
    stmt.query_map([], |row| row.get::<_, i64>(0))
        .unwrap_or_else(|e| panic!("{e}"))
        .map(|r| r.unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

/// The files of a directory tree with their bytes, to prove "untouched".
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap_or_default();
                out.push((path, bytes));
            }
        }
    }
    out.sort();
    out
}

/// Every Parquet file under a directory (a stream's directory, through its
/// link), sorted.
pub fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)
            .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
            .flatten()
        {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Every row of every Parquet file under a directory.
pub fn read_parquet_dir(dir: &Path) -> Vec<arrow::array::RecordBatch> {
    parquet_files(dir)
        .iter()
        .flat_map(|path| {
            let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{e}"));
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                .and_then(|b| b.build())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
                .map(|b| b.unwrap_or_else(|e| panic!("{e}")))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// One value of a query over the rows of a Parquet directory, loaded into
/// an in-memory DuckDB table `t` (the bundled DuckDB has no Parquet
/// extension, and tests run offline).
pub fn query_parquet_i64(dir: &Path, sql: &str) -> i64 {
    use lucca_sync::load::duckdb::{quote_ident, sql_type};
    let conn = duckdb::Connection::open_in_memory().unwrap_or_else(|e| panic!("{e}"));
    let batches = read_parquet_dir(dir);
    let Some(first) = batches.first() else {
        panic!("no rows under {}", dir.display())
    };
    let columns: Vec<String> = first
        .schema()
        .fields()
        .iter()
        .map(|f| format!("{} {}", quote_ident(f.name()), sql_type(f.data_type())))
        .collect();
    conn.execute_batch(&format!("CREATE TABLE t ({});", columns.join(", ")))
        .unwrap_or_else(|e| panic!("{e}"));
    {
        let mut appender = conn.appender("t").unwrap_or_else(|e| panic!("{e}"));
        for batch in batches {
            appender
                .append_record_batch(batch)
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
    conn.query_row(sql, [], |row| row.get::<_, i64>(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The Python interpreter of a reader venv, or `None` (test skipped) when
/// it is not installed and not required.
pub fn reader(venv: &str) -> Option<PathBuf> {
    let root = std::env::var_os("LUCCA_SYNC_READERS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/lucca-sync-readers"))
        })
        .unwrap_or_default();
    let python = root.join(venv).join("bin/python");
    if python.exists() {
        return Some(python);
    }
    assert!(
        std::env::var_os("LUCCA_SYNC_REQUIRE_READERS").is_none(),
        "{} is missing: run scripts/install-readers",
        python.display()
    );
    eprintln!(
        "skipped: {} is missing (run scripts/install-readers)",
        python.display()
    );
    None
}

/// Runs a Python script with arguments; returns its stdout, trimmed.
pub fn python(interpreter: &Path, script: &str, args: &[&Path]) -> String {
    let out = std::process::Command::new(interpreter)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", interpreter.display()));
    assert!(
        out.status.success(),
        "{}: {}",
        interpreter.display(),
        text(&out.stderr)
    );
    text(&out.stdout).trim().to_owned()
}
