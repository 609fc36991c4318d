//! Loading: write modes, incremental state stored with the data, runs
//! killed or interrupted at several points, and a second concurrent run.

mod common;

use std::path::Path;
use std::time::Duration;

use lucca_sync::sandbox::{Faults, Mutation, SandboxConfig, UserData};

use common::*;

fn pipeline(dir: &Path, destination: &str, stream_extra: &str, rate: &str) -> String {
    let text = format!(
        "version: 1\nname: t\nsource:\n  base_url: ${{LUCCA_BASE_URL}}\n  api_key: ${{LUCCA_API_KEY}}\n  rate_limit_per_minute: {rate}\nstreams:\n  - name: users\n    endpoint: /api/v3/users\n    params: {{ formerEmployees: \"true\" }}\n    fields: [id, lastName, modifiedAt]\n    primary_key: id\n{stream_extra}destination:\n{destination}\n"
    );
    let path = dir.join("p.yaml");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    path.to_string_lossy().into_owned()
}

/// The destination's files, without the lock file and the working copies
/// a killed run leaves for the next run to clear.
fn published(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    snapshot(dir)
        .into_iter()
        .filter(|(p, _)| {
            let name = p.to_string_lossy();
            !name.ends_with(".lock")
                && !name.contains(".tmp-")
                && !name.contains("/.lucca-sync/")
                && !name.contains(".link-")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn incremental_merge_updates_changed_rows_without_duplicates_and_keeps_state_with_data() {
    let server = sandbox(SandboxConfig {
        users: UserData::Synthetic(3_000),
        faults: Faults {
            mutate_after: Some((
                3,
                Mutation {
                    insert: 5,
                    delete: vec![],
                },
            )),
            ..Faults::default()
        },
        ..SandboxConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (destination, db) = duckdb_destination(dir.path());
    let extra = "    write_mode: merge\n    incremental: { cursor_field: modifiedAt }\n";
    let path = pipeline(dir.path(), &destination, extra, "unlimited");

    let out = lucca_sync(&["run", &path], &server.base_url(), KEY).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(query_i64(&db, "select count(*) from users"), 3_000);
    let first_cursor = query_string(
        &db,
        "select cursor from _lucca_sync_state where stream = 'users'",
    );
    assert!(!server.requests()[0].query.contains("since"));

    let out = lucca_sync(&["run", &path], &server.base_url(), KEY).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let second = server.requests().into_iter().skip(3).collect::<Vec<_>>();
    assert!(
        second[0].query.contains("modifiedAt=since"),
        "the second run asks only for changes: {}",
        second[0].query
    );
    assert_eq!(
        query_i64(&db, "select count(*) from users"),
        3_005,
        "new rows added"
    );
    assert_eq!(
        query_i64(&db, "select count(distinct id) from users"),
        3_005,
        "no duplicates"
    );
    let second_cursor = query_string(
        &db,
        "select cursor from _lucca_sync_state where stream = 'users'",
    );
    assert!(
        second_cursor > first_cursor,
        "{second_cursor} > {first_cursor}"
    );

    // --full-refresh ignores the state.
    let out = lucca_sync(&["run", "--full-refresh", &path], &server.base_url(), KEY).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let last = server
        .requests()
        .pop()
        .unwrap_or_else(|| panic!("requests"));
    assert!(!last.query.contains("since"), "{}", last.query);
    assert_eq!(query_i64(&db, "select count(*) from users"), 3_005);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn append_tags_rows_with_the_run_in_duckdb_and_parquet() {
    let server = sandbox(SandboxConfig::default()).await;
    for parquet in [false, true] {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (destination, out_path) = if parquet {
            parquet_destination(dir.path())
        } else {
            duckdb_destination(dir.path())
        };
        let path = pipeline(
            dir.path(),
            &destination,
            "    write_mode: append\n",
            "unlimited",
        );
        for _ in 0..2 {
            let out = lucca_sync(&["run", &path], &server.base_url(), KEY).await;
            assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        }
        let (rows, runs) = if parquet {
            let mut rows = 0i64;
            let mut runs = std::collections::HashSet::new();
            for batch in read_parquet_dir(&out_path.join("users")) {
                rows += batch.num_rows() as i64;
                let col = batch
                    .column_by_name("_lucca_sync_run_id")
                    .unwrap_or_else(|| panic!("run id"));
                let col = arrow::array::AsArray::as_string::<i32>(col.as_ref());
                runs.extend(col.iter().flatten().map(str::to_owned));
            }
            (rows, runs.len() as i64)
        } else {
            (
                query_i64(&out_path, "select count(*) from users"),
                query_i64(
                    &out_path,
                    "select count(distinct _lucca_sync_run_id) from users",
                ),
            )
        };
        let fixture = query_fixture_count();
        assert_eq!(rows, 2 * fixture, "parquet={parquet}");
        assert_eq!(runs, 2, "parquet={parquet}");
    }
    server.shutdown().await;
}

fn query_fixture_count() -> i64 {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/users.json"))
        .unwrap_or_else(|e| panic!("{e}"));
    let users: Vec<serde_json::Value> =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    users.len() as i64
}

#[tokio::test(flavor = "multi_thread")]
async fn parquet_merge_keeps_one_row_per_key() {
    let server = sandbox(SandboxConfig::default()).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (destination, out_dir) = parquet_destination(dir.path());
    let path = pipeline(
        dir.path(),
        &destination,
        "    write_mode: merge\n",
        "unlimited",
    );
    for _ in 0..2 {
        let out = lucca_sync(&["run", &path], &server.base_url(), KEY).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
    let mut ids = Vec::new();
    for batch in read_parquet_dir(&out_dir.join("users")) {
        let col = batch.column_by_name("id").unwrap_or_else(|| panic!("id"));
        let col = arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(col.as_ref());
        ids.extend(col.values().iter().copied());
    }
    let total = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), total, "no duplicate key after two merges");
    assert_eq!(total as i64, query_fixture_count());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_run_leaves_the_previous_data_at_every_point() {
    let server = sandbox(SandboxConfig {
        users: UserData::Synthetic(4_000),
        faults: Faults {
            latency: Duration::from_millis(120),
            ..Faults::default()
        },
        ..SandboxConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (destination, db) = duckdb_destination(dir.path());
    let path = pipeline(
        dir.path(),
        &destination,
        "    page_size: 500\n",
        "unlimited",
    );
    let out = lucca_sync(&["run", &path], &server.base_url(), KEY).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out_dir = dir.path().join("out");
    let before = published(&out_dir);
    for delay_ms in [50u64, 300, 600, 900, 1_150] {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_lucca-sync"))
            .args(["run", &path])
            .env("LUCCA_BASE_URL", server.base_url())
            .env("LUCCA_API_KEY", KEY)
            .env("LUCCA_SYNC_LOG_FORMAT", "json")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        let _ = child.start_kill();
        let _ = child.wait().await;
        assert_eq!(published(&out_dir), before, "killed after {delay_ms} ms");
        assert_eq!(query_i64(&db, "select count(*) from users"), 4_000);
    }
    // The next run clears what the killed ones left and succeeds.
    let out = lucca_sync(&["run", &path], &server.base_url(), KEY).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let leftovers: Vec<_> = snapshot(&out_dir)
        .into_iter()
        .filter(|(p, _)| p.to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_within_seconds_with_exit_130_and_writes_nothing() {
    let server = sandbox(SandboxConfig {
        users: UserData::Synthetic(4_000),
        faults: Faults {
            latency: Duration::from_millis(150),
            ..Faults::default()
        },
        ..SandboxConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (destination, _db) = duckdb_destination(dir.path());
    let path = pipeline(
        dir.path(),
        &destination,
        "    page_size: 500\n",
        "unlimited",
    );
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_lucca-sync"))
        .args(["run", &path])
        .env("LUCCA_BASE_URL", server.base_url())
        .env("LUCCA_API_KEY", KEY)
        .env("LUCCA_SYNC_LOG_FORMAT", "json")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let pid = child.id().unwrap_or_else(|| panic!("pid")).to_string();
    let sent = std::time::Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success());
    let out = child
        .wait_with_output()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "stopped in {:?}",
        sent.elapsed()
    );
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    assert!(
        published(&dir.path().join("out")).is_empty(),
        "nothing published"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_run_on_the_same_destination_fails_fast() {
    let server = sandbox(SandboxConfig {
        users: UserData::Synthetic(3_000),
        faults: Faults {
            latency: Duration::from_millis(300),
            ..Faults::default()
        },
        ..SandboxConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (destination, db) = duckdb_destination(dir.path());
    let path = pipeline(
        dir.path(),
        &destination,
        "    page_size: 500\n",
        "unlimited",
    );
    let first = tokio::process::Command::new(env!("CARGO_BIN_EXE_lucca-sync"))
        .args(["run", &path])
        .env("LUCCA_BASE_URL", server.base_url())
        .env("LUCCA_API_KEY", KEY)
        .env("LUCCA_SYNC_LOG_FORMAT", "json")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    let second = lucca_sync(&["run", &path], &server.base_url(), KEY).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(second.status.code(), Some(1), "{}", text(&second.stderr));
    assert!(text(&second.stderr).contains("another lucca-sync run is writing this destination"));
    let first = first
        .wait_with_output()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    assert_eq!(query_i64(&db, "select count(*) from users"), 3_000);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reader_holding_the_file_open_does_not_block_a_sync() {
    let server = sandbox(SandboxConfig::default()).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (destination, db) = duckdb_destination(dir.path());
    let path = pipeline(dir.path(), &destination, "", "unlimited");
    let out = lucca_sync(&["run", &path], &server.base_url(), KEY).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // A BI tool holds the file open read-only during the next sync.
    let config = duckdb::Config::default()
        .access_mode(duckdb::AccessMode::ReadOnly)
        .unwrap_or_else(|e| panic!("{e}"));
    let reader = duckdb::Connection::open_with_flags(&db, config).unwrap_or_else(|e| panic!("{e}"));
    let out = lucca_sync(&["run", &path], &server.base_url(), KEY).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let old: i64 = reader
        .query_row("select count(*) from users", [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        old,
        query_fixture_count(),
        "the reader still sees complete data"
    );
    drop(reader);
    assert_eq!(
        query_i64(&db, "select count(*) from users"),
        query_fixture_count()
    );
    server.shutdown().await;
}
