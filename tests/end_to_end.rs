//! End to end: the real binary against the sandbox, checking what a user
//! would check: rows and typed values in DuckDB and Parquet, exit codes,
//! and the requests the server saw.

mod common;

use std::fs::File;

use arrow::array::{AsArray, Int64Array};
use lucca_sync::sandbox::{Faults, SandboxConfig, UserData};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use common::*;

fn fixture_users() -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/users.json"))
        .unwrap_or_else(|e| panic!("{e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn users_land_in_duckdb_typed_and_flat() {
    let server = sandbox(SandboxConfig::default()).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (destination, db) = duckdb_destination(dir.path());
    let pipeline = users_pipeline(dir.path(), &destination, "");

    let out = lucca_sync(
        &["run", pipeline.to_str().unwrap_or_default()],
        &server.base_url(),
        KEY,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));

    let users = fixture_users();
    assert_eq!(
        query_i64(&db, "select count(*) from users") as usize,
        users.len()
    );
    let expected_ids: Vec<i64> = {
        let mut v: Vec<i64> = users.iter().filter_map(|u| u["id"].as_i64()).collect();
        v.sort();
        v
    };
    assert_eq!(ids(&db, "users"), expected_ids, "every user exactly once");

    // Typed, flat, snake_case columns.
    let types = query_string(
        &db,
        "select string_agg(column_name || ':' || data_type, ',' order by column_name) from information_schema.columns where table_name = 'users' and column_name in ('id','birth_date','modified_at','manager_id','manager_name','department_name','first_name')",
    );
    assert_eq!(
        types,
        "birth_date:TIMESTAMP,department_name:VARCHAR,first_name:VARCHAR,id:BIGINT,manager_id:BIGINT,manager_name:VARCHAR,modified_at:TIMESTAMP"
    );

    // A few values, exactly as the fixture has them.
    let first = &users[0];
    let id = first["id"].as_i64().unwrap_or_default();
    let name = query_string(
        &db,
        &format!("select first_name from users where id = {id}"),
    );
    assert_eq!(Some(name.as_str()), first["firstName"].as_str());
    let with_manager = users
        .iter()
        .find(|u| u["manager"]["name"].is_string())
        .unwrap_or_else(|| panic!("a user with a manager"));
    let manager = query_string(
        &db,
        &format!(
            "select manager_name from users where id = {}",
            with_manager["id"]
        ),
    );
    assert_eq!(
        Some(manager.as_str()),
        with_manager["manager"]["name"].as_str()
    );
    let with_ms = users
        .iter()
        .find(|u| u["modifiedAt"].as_str().is_some_and(|s| s.contains('.')))
        .unwrap_or_else(|| panic!("a datetime with milliseconds"));
    let modified = query_string(
        &db,
        &format!(
            "select strftime(modified_at, '%Y-%m-%dT%H:%M:%S.%g') from users where id = {}",
            with_ms["id"]
        ),
    );
    let expected = with_ms["modifiedAt"].as_str().unwrap_or_default();
    assert!(
        modified.starts_with(&expected[..19]),
        "{modified} vs {expected}"
    );

    // One request: the fixture fits in one page.
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let first = &requests[0];
    assert_eq!(
        first.authorization.as_deref(),
        Some(format!("lucca application={KEY}").as_str())
    );
    assert_eq!(first.accept.as_deref(), Some("application/json"));
    assert_eq!(
        first.user_agent.as_deref(),
        Some(concat!("lucca-sync/", env!("CARGO_PKG_VERSION")))
    );
    assert!(first.query.contains("collection.count"), "{}", first.query);
    // The key never reaches the logs.
    assert!(!text(&out.stderr).contains(KEY));
    assert!(!text(&out.stdout).contains(KEY));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn users_land_in_parquet() {
    let server = sandbox(SandboxConfig::default()).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (destination, out_dir) = parquet_destination(dir.path());
    run_ok(&users_pipeline(dir.path(), &destination, ""), &server).await;

    let builder = only_parquet_file(&out_dir.join("users"));
    let compression = builder.metadata().row_group(0).column(0).compression();
    assert!(compression.to_string().starts_with("ZSTD"), "{compression}");
    let mut ids = Vec::new();
    let mut names = Vec::new();
    for batch in read_parquet_dir(&out_dir.join("users")) {
        let id = batch.column_by_name("id").unwrap_or_else(|| panic!("id"));
        let id = id
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap_or_else(|| panic!("BIGINT"));
        ids.extend(id.values().iter().copied());
        let name = batch
            .column_by_name("last_name")
            .unwrap_or_else(|| panic!("last_name"));
        names.extend(name.as_string::<i32>().iter().map(|s| s.map(str::to_owned)));
    }
    let users = fixture_users();
    assert_eq!(ids.len(), users.len());
    let expected: Vec<Option<String>> = users
        .iter()
        .map(|u| u["lastName"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(names, expected);
    // The stream's directory, the run history, lucca-sync's own directory
    // and the lock: nothing else, no staging left.
    let mut entries: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    assert_eq!(
        entries,
        [".lucca-sync", ".lucca-sync.lock", "_runs", "users"]
    );
    let mut internal: Vec<String> = std::fs::read_dir(out_dir.join(".lucca-sync"))
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    internal.sort();
    assert_eq!(
        internal,
        ["_current", "_published", "users"],
        "no staging left"
    );
    assert_eq!(parquet_files(&out_dir.join("_runs")).len(), 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replace_run_that_reads_no_record_leaves_an_empty_table_of_the_declared_columns() {
    let server = sandbox(SandboxConfig::default().with_users(UserData::Synthetic(0))).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (destination, db) = duckdb_destination(dir.path());
    run_ok(&users_pipeline(dir.path(), &destination, ""), &server).await;
    assert_eq!(query_i64(&db, "SELECT count(*) FROM users"), 0);
    assert_eq!(
        query_string(
            &db,
            "SELECT string_agg(column_name, ',' ORDER BY ordinal_position) \
             FROM information_schema.columns WHERE table_name = 'users'"
        ),
        "id,first_name,last_name,mail,birth_date,dt_contract_start,dt_contract_end,\
         modified_at,department_id,department_name,manager_id,manager_name,legal_entity_id"
    );

    let (destination, out_dir) = parquet_destination(dir.path());
    run_ok(&users_pipeline(dir.path(), &destination, ""), &server).await;
    let file = only_parquet_file(&out_dir.join("users"));
    assert_eq!(file.metadata().file_metadata().num_rows(), 0);
    assert_eq!(file.schema().fields().len(), 13);
    server.shutdown().await;

    // After a run with records, one without leaves an empty file too, its
    // columns typed as the table had them.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (destination, out_dir) = parquet_destination(dir.path());
    let pipeline = users_pipeline(dir.path(), &destination, "");
    for users in [3, 0] {
        let server = sandbox(SandboxConfig::default().with_users(UserData::Synthetic(users))).await;
        run_ok(&pipeline, &server).await;
        server.shutdown().await;
    }
    let file = only_parquet_file(&out_dir.join("users"));
    assert_eq!(file.metadata().file_metadata().num_rows(), 0);
    let id = file
        .schema()
        .field_with_name("id")
        .map(|f| f.data_type().clone());
    assert_eq!(id.ok(), Some(arrow::datatypes::DataType::Int64));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replace_run_that_reads_no_record_empties_the_child_tables_and_keeps_their_columns() {
    let pipeline = |dir: &std::path::Path, destination: &str| {
        let text = format!(
            "version: 1\nname: users\nsource:\n  base_url: ${{LUCCA_BASE_URL}}\n  api_key: ${{LUCCA_API_KEY}}\n  rate_limit_per_minute: unlimited\nstreams:\n  - name: users\n    endpoint: /api/v3/users\n    fields: [id, lastName, \"userWorkCycles[id,workCycleID]\"]\n    primary_key: id\ndestination:\n{destination}\n"
        );
        let path = dir.join("users.yaml");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        path
    };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (duckdb, db) = duckdb_destination(dir.path());
    let (parquet, out_dir) = parquet_destination(dir.path());
    for users in [5, 0] {
        let server = sandbox(SandboxConfig::default().with_users(UserData::Synthetic(users))).await;
        for destination in [&duckdb, &parquet] {
            run_ok(&pipeline(dir.path(), destination), &server).await;
        }
        server.shutdown().await;
    }
    let columns = |table: &str| {
        query_string(
            &db,
            &format!(
                "SELECT string_agg(column_name || ' ' || data_type, ',' ORDER BY ordinal_position) \
                 FROM information_schema.columns WHERE table_name = '{table}'"
            ),
        )
    };
    // The array is still a child table, not flattened columns of `users`.
    assert_eq!(columns("users"), "id BIGINT,last_name VARCHAR");
    assert_eq!(
        columns("users__user_work_cycles"),
        "users_id BIGINT,list_index BIGINT,id BIGINT,work_cycle_id BIGINT"
    );
    assert_eq!(
        query_i64(&db, "SELECT count(*) FROM users__user_work_cycles"),
        0
    );
    for (table, fields) in [("users", 2), ("users__user_work_cycles", 4)] {
        let file = only_parquet_file(&out_dir.join(table));
        assert_eq!(file.metadata().file_metadata().num_rows(), 0, "{table}");
        assert_eq!(file.schema().fields().len(), fields, "{table}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn verbose_logs_one_line_per_page_without_the_http_librarys_chatter() {
    let server = sandbox(SandboxConfig::default()).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (destination, _db) = duckdb_destination(dir.path());
    let pipeline = users_pipeline(dir.path(), &destination, "");
    let out = lucca_sync(
        &["-v", "run", pipeline.to_str().unwrap_or_default()],
        &server.base_url(),
        KEY,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains(r#""message":"page read""#), "{stderr}");
    assert!(!stderr.contains("idle connection"), "{stderr}");
    server.shutdown().await;
}

/// Runs `pipeline` against `server` and expects every stream loaded.
async fn run_ok(pipeline: &std::path::Path, server: &lucca_sync::sandbox::Sandbox) {
    let out = lucca_sync(
        &["run", pipeline.to_str().unwrap_or_default()],
        &server.base_url(),
        KEY,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
}

/// The reader of the one Parquet file of a stream's directory.
fn only_parquet_file(dir: &std::path::Path) -> ParquetRecordBatchReaderBuilder<File> {
    let files = parquet_files(dir);
    assert_eq!(files.len(), 1, "{files:?}");
    let file = File::open(&files[0]).unwrap_or_else(|e| panic!("{e}"));
    ParquetRecordBatchReaderBuilder::try_new(file).unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rejected_key_stops_at_once_with_exit_3_and_touches_nothing() {
    let server = sandbox(SandboxConfig::default()).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (destination, db) = duckdb_destination(dir.path());
    let pipeline = users_pipeline(dir.path(), &destination, "");
    let path = pipeline.to_str().unwrap_or_default().to_owned();
    let out = lucca_sync(&["run", &path], &server.base_url(), KEY).await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let before = snapshot(&dir.path().join("out"));
    let seen_before = server.requests().len();

    let wrong = "wrong-key-should-never-be-printed";
    let out = lucca_sync(&["run", &path], &server.base_url(), wrong).await;
    assert_eq!(out.status.code(), Some(3), "stderr: {}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("the API key was rejected (401 Unauthorized)"),
        "{stderr}"
    );
    for line in stderr.lines() {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| v.is_object()),
            "every stderr line is a JSON object: {line}"
        );
    }
    assert!(!stderr.contains(wrong) && !text(&out.stdout).contains(wrong));
    assert_eq!(
        server.requests().len() - seen_before,
        1,
        "exactly one request, no retry"
    );
    assert_eq!(
        snapshot(&dir.path().join("out")),
        before,
        "destination untouched"
    );
    assert_eq!(
        query_i64(&db, "select count(*) from users") as usize,
        fixture_users().len()
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_401_mid_run_stops_every_request_and_publishes_nothing() {
    let server = sandbox(SandboxConfig {
        users: UserData::Synthetic(3_500),
        faults: Faults {
            unauthorized_after: Some(2),
            ..Faults::default()
        },
        ..SandboxConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (destination, _db) = duckdb_destination(dir.path());
    let pipeline = users_pipeline(dir.path(), &destination, "    page_size: 1000");
    let out = lucca_sync(
        &["run", pipeline.to_str().unwrap_or_default()],
        &server.base_url(),
        KEY,
    )
    .await;
    assert_eq!(out.status.code(), Some(3), "stderr: {}", text(&out.stderr));
    let statuses: Vec<u16> = server.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 200, 401], "no request after the 401");
    // The log line says where, in fields a log collector can query.
    let error = text(&out.stderr)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["level"] == "ERROR")
        .unwrap_or_else(|| panic!("no error line: {}", text(&out.stderr)));
    assert_eq!(error["pipeline"], "users", "{error}");
    assert_eq!(error["stream"], "users", "{error}");
    assert_eq!(error["exit_code"], 3, "{error}");
    assert!(
        error["url"]
            .as_str()
            .is_some_and(|u| u.contains("/api/v3/users?")),
        "{error}"
    );
    let left: Vec<_> = snapshot(&dir.path().join("out"))
        .into_iter()
        .filter(|(p, _)| !p.to_string_lossy().ends_with(".lock"))
        .collect();
    assert!(
        left.is_empty(),
        "nothing published, no working copy left: {left:?}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn many_pages_every_record_once_with_keyset_paging() {
    let server = sandbox(SandboxConfig {
        users: UserData::Synthetic(2_500),
        ..SandboxConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (destination, db) = duckdb_destination(dir.path());
    let pipeline = users_pipeline(dir.path(), &destination, "    page_size: 1000");
    let out = lucca_sync(
        &["run", pipeline.to_str().unwrap_or_default()],
        &server.base_url(),
        KEY,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(ids(&db, "users"), (1..=2_500).collect::<Vec<i64>>());
    let queries: Vec<String> = server.requests().iter().map(|r| r.query.clone()).collect();
    assert_eq!(queries.len(), 3, "ceil(2500 / 1000) requests: {queries:?}");
    assert!(
        queries[1].contains("id=greaterthan%2C1000"),
        "{}",
        queries[1]
    );
    assert!(queries.iter().all(|q| q.contains("orderBy=id%2Casc")));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_failures_are_retried_and_nothing_is_lost_or_repeated() {
    let server = sandbox(SandboxConfig {
        users: UserData::Synthetic(3_000),
        faults: Faults {
            status_every: Some((503, 3)),
            truncate_body_on: vec![2],
            invalid_json_on: vec![4],
            ..Faults::default()
        },
        ..SandboxConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (destination, db) = duckdb_destination(dir.path());
    let pipeline = users_pipeline(dir.path(), &destination, "    page_size: 1000");
    let out = lucca_sync(
        &["run", pipeline.to_str().unwrap_or_default()],
        &server.base_url(),
        KEY,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(ids(&db, "users"), (1..=3_000).collect::<Vec<i64>>());
    let statuses: Vec<u16> = server.requests().iter().map(|r| r.status).collect();
    assert!(statuses.len() > 3, "retries happened: {statuses:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn check_sends_one_request_and_says_ok_or_why_not() {
    let server = sandbox(SandboxConfig::default()).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (destination, _db) = duckdb_destination(dir.path());
    let pipeline = users_pipeline(dir.path(), &destination, "");
    let path = pipeline.to_str().unwrap_or_default().to_owned();

    let out = lucca_sync(&["check", &path], &server.base_url(), KEY).await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("OK: the key was accepted"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(server.requests().len(), 1);

    let out = lucca_sync(&["check", &path], &server.base_url(), "not-the-key").await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("FAILED"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(server.requests().len(), 2, "no retry of a 401");
    assert!(!dir.path().join("out").exists(), "check writes nothing");
    server.shutdown().await;

    // A key without rights on the stream: 4, as `run` says of it.
    let server = sandbox(SandboxConfig::default().with_faults(Faults {
        forbidden_paths: vec!["/api/v3/users".into()],
        ..Faults::default()
    }))
    .await;
    let out = lucca_sync(&["check", &path], &server.base_url(), KEY).await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stdout));
    server.shutdown().await;
}

/// A pipeline of users and departments against the sandbox, DuckDB output.
fn two_streams(
    dir: &std::path::Path,
    rate: &str,
    users_extra: &str,
) -> (String, std::path::PathBuf) {
    let (destination, db) = duckdb_destination(dir);
    let text = format!(
        "version: 1\nname: t\nsource:\n  base_url: ${{LUCCA_BASE_URL}}\n  api_key: ${{LUCCA_API_KEY}}\n  rate_limit_per_minute: {rate}\nstreams:\n  - name: users\n    endpoint: /api/v3/users\n    params: {{ formerEmployees: \"true\" }}\n    fields: [id, lastName, modifiedAt]\n    primary_key: id\n{users_extra}  - name: departments\n    endpoint: /api/v3/departments\n    fields: [id, name]\n    primary_key: id\ndestination:\n{destination}\n"
    );
    let path = dir.join("p.yaml");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    (path.to_string_lossy().into_owned(), db)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rejected_key_still_reports_every_stream_as_not_loaded() {
    let server = sandbox(SandboxConfig {
        faults: Faults {
            unauthorized_after: Some(0),
            ..Faults::default()
        },
        ..SandboxConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (path, _db) = two_streams(dir.path(), "unlimited", "");
    let summary = dir.path().join("summary.json");
    let metrics = dir.path().join("lucca_sync.prom");
    let out = lucca_sync(
        &[
            "run",
            &path,
            "--summary-json",
            summary.to_str().unwrap_or_default(),
            "--metrics-file",
            metrics.to_str().unwrap_or_default(),
        ],
        &server.base_url(),
        KEY,
    )
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&summary).unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"));
    let streams = &json["pipelines"][0]["streams"];
    assert_eq!(streams[0]["stream"], "users", "{json}");
    assert_eq!(streams[1]["stream"], "departments", "{json}");
    for stream in [&streams[0], &streams[1]] {
        assert_eq!(stream["status"], "failed", "{json}");
        assert_eq!(stream["rows"], 0, "{json}");
    }
    // The requests sent before the stop still count (the tenant's budget).
    let reported: u64 = (0..2)
        .map(|i| streams[i]["requests"].as_u64().unwrap_or_default())
        .sum();
    // At least what the server saw: a request of the other stream may be
    // cut off by the stop after it was counted, before it arrived.
    assert!(reported >= server.requests().len() as u64, "{json}");
    assert!(reported >= 1, "{json}");
    // And the table says it on stdout, as for any run.
    let stdout = text(&out.stdout);
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    for stream in ["users", "departments"] {
        assert!(
            rows.iter()
                .any(|r| r.first() == Some(&stream) && r.last() == Some(&"failed")),
            "{stdout}"
        );
    }
    // Per-stream alerts see a 0, not a series gone missing.
    let prom = std::fs::read_to_string(&metrics).unwrap_or_else(|e| panic!("{e}"));
    for line in [
        "lucca_sync_stream_success{pipeline=\"t\",stream=\"users\"} 0",
        "lucca_sync_stream_success{pipeline=\"t\",stream=\"departments\"} 0",
        "lucca_sync_run_exit_code 3",
    ] {
        assert!(prom.lines().any(|l| l == line), "{line}\n{prom}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn summary_json_and_metrics_file_describe_the_run() {
    let server = sandbox(SandboxConfig {
        faults: Faults {
            forbidden_paths: vec!["/api/v3/departments".into()],
            ..Faults::default()
        },
        ..SandboxConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (path, _db) = two_streams(dir.path(), "unlimited", "");
    let summary = dir.path().join("summary.json");
    let metrics = dir.path().join("lucca_sync.prom");
    let out = lucca_sync(
        &[
            "run",
            &path,
            "--summary-json",
            summary.to_str().unwrap_or_default(),
            "--metrics-file",
            metrics.to_str().unwrap_or_default(),
        ],
        &server.base_url(),
        KEY,
    )
    .await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    // The log collector's view: stderr is not a terminal, so JSON lines; the
    // refused stream's summary says `forbidden` and, apart, why.
    let summaries: Vec<serde_json::Value> = text(&out.stderr)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["message"] == "stream summary")
        .collect();
    assert_eq!(summaries.len(), 2, "{}", text(&out.stderr));
    assert_eq!(summaries[0]["status"], "loaded");
    assert!(summaries[0].get("error").is_none(), "{}", summaries[0]);
    assert_eq!(summaries[1]["status"], "forbidden", "{}", summaries[1]);
    assert!(
        summaries[1]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("403 Forbidden"),
        "{}",
        summaries[1]
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&summary).unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(json["exit_code"], 4);
    let streams = &json["pipelines"][0]["streams"];
    assert_eq!(streams[0]["stream"], "users");
    assert_eq!(streams[0]["status"], "loaded");
    assert_eq!(streams[0]["rows"], fixture_users().len());
    assert_eq!(streams[0]["requests"], 1);
    assert_eq!(streams[1]["status"], "forbidden");
    assert!(
        streams[1]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("403 Forbidden"),
        "{json}"
    );
    let prom = std::fs::read_to_string(&metrics).unwrap_or_else(|e| panic!("{e}"));
    let users = fixture_users().len();
    for line in [
        format!("lucca_sync_rows_written{{pipeline=\"t\",stream=\"users\"}} {users}"),
        "lucca_sync_requests{pipeline=\"t\",stream=\"departments\"} 1".to_owned(),
        "lucca_sync_stream_success{pipeline=\"t\",stream=\"users\"} 1".to_owned(),
        "lucca_sync_stream_success{pipeline=\"t\",stream=\"departments\"} 0".to_owned(),
        "lucca_sync_run_exit_code 4".to_owned(),
    ] {
        assert!(prom.lines().any(|l| l == line), "{line}\n{prom}");
    }
    assert!(
        prom.lines().any(|l| l.starts_with(
            "lucca_sync_last_success_timestamp_seconds{pipeline=\"t\",stream=\"users\"} "
        )),
        "{prom}"
    );
    assert!(
        !prom.contains(
            "lucca_sync_last_success_timestamp_seconds{pipeline=\"t\",stream=\"departments\"}"
        ),
        "never succeeded: {prom}"
    );

    // A report that could not be written is found out before the sync.
    let before = server.requests().len();
    let nowhere = dir.path().join("missing").join("summary.json");
    let out = lucca_sync(
        &[
            "run",
            &path,
            "--summary-json",
            nowhere.to_str().unwrap_or_default(),
        ],
        &server.base_url(),
        KEY,
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("does not exist"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(server.requests().len(), before, "nothing was sent");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_asks_only_for_counts_and_writes_nothing() {
    let server = sandbox(SandboxConfig {
        users: UserData::Synthetic(2_500),
        ..SandboxConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (path, _db) = two_streams(dir.path(), "60", "    page_size: 1000\n");
    let out = lucca_sync(&["run", "--dry-run", &path], &server.base_url(), KEY).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(
        rows.contains(&vec!["users", "2500", "1000", "3", "/api/v3/users"]),
        "{stdout}"
    );
    assert!(
        rows.contains(&vec![
            "departments",
            "12",
            "1000",
            "1",
            "/api/v3/departments"
        ]),
        "{stdout}"
    );
    // 4 requests at 60 per minute.
    assert!(
        stdout
            .contains("at 60 requests per minute, the request budget alone makes the run take 4 s"),
        "{stdout}"
    );
    assert_eq!(server.requests().len(), 2, "one request per stream");
    assert!(!dir.path().join("out").exists(), "nothing written");
    server.shutdown().await;
}

/// A stream the key may not read does not hide the others' plan: the
/// dry run lists every stream, names the refusal and exits 4, as the run
/// would.
#[tokio::test(flavor = "multi_thread")]
async fn dry_run_goes_on_past_a_refused_stream_and_exits_4() {
    let server = sandbox(SandboxConfig {
        faults: Faults {
            forbidden_paths: vec!["/api/v3/users".into()],
            ..Faults::default()
        },
        ..SandboxConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (path, _db) = two_streams(dir.path(), "unlimited", "");
    let out = lucca_sync(&["run", "--dry-run", &path], &server.base_url(), KEY).await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(
        rows.contains(&vec!["users", "?", "1000", "?", "/api/v3/users"]),
        "{stdout}"
    );
    assert!(
        rows.contains(&vec![
            "departments",
            "6",
            "1000",
            "1",
            "/api/v3/departments"
        ]),
        "{stdout}"
    );
    assert!(
        text(&out.stderr).contains("403 Forbidden"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(server.requests().len(), 2, "one request per stream");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn limit_caps_the_records_of_each_stream_and_keeps_the_state() {
    let server = sandbox(SandboxConfig {
        users: UserData::Synthetic(5_000),
        ..SandboxConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (path, db) = two_streams(
        dir.path(),
        "unlimited",
        "    write_mode: merge\n    incremental: { cursor_field: modifiedAt }\n",
    );
    let out = lucca_sync(&["run", "--limit", "1500", &path], &server.base_url(), KEY).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(query_i64(&db, "select count(*) from users"), 1_500);
    assert_eq!(query_i64(&db, "select count(*) from departments"), 12);
    let users_requests = server
        .requests()
        .iter()
        .filter(|r| r.path == "/api/v3/users")
        .count();
    assert_eq!(users_requests, 2, "1000 + 500, then stop");
    assert!(
        !text(&out.stderr).contains("the API reported"),
        "a limited run is short on purpose: {}",
        text(&out.stderr)
    );
    assert_eq!(
        query_i64(
            &db,
            "select count(*) from _lucca_sync_runs where count_mismatch"
        ),
        0
    );
    assert_eq!(
        query_i64(
            &db,
            "select count(*) from duckdb_tables() where table_name = '_lucca_sync_state'"
        ),
        0,
        "a partial read stores no cursor"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn declared_columns_and_pii_policies_shape_the_duckdb_table() {
    let server = sandbox(SandboxConfig::default()).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (destination, db) = duckdb_destination(dir.path());
    let columns = "    columns:\n      mail: { pii: hash }\n      birth_date: { pii: drop }\n      legal_entity_id: { type: double }\n      dt_contract_end: { type: timestamp }\n";
    let path = users_pipeline(dir.path(), &destination, columns);
    let with_key = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{e}"))
        .replace("destination:", "pii_key: ${PII_KEY}\ndestination:");
    std::fs::write(&path, with_key).unwrap_or_else(|e| panic!("{e}"));
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_lucca-sync"))
        .args(["run", path.to_str().unwrap_or_default()])
        .env("LUCCA_BASE_URL", server.base_url())
        .env("LUCCA_API_KEY", KEY)
        .env("PII_KEY", "pii-key-for-tests")
        .env("LUCCA_SYNC_LOG_FORMAT", "json")
        .output()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("pii-key-for-tests"));
    let describe = |column: &str| {
        query_string(
            &db,
            &format!("select column_type from (describe users) where column_name = '{column}'"),
        )
    };
    assert_eq!(describe("legal_entity_id"), "DOUBLE");
    assert_eq!(describe("dt_contract_end"), "TIMESTAMP");
    assert_eq!(describe("mail"), "VARCHAR");
    assert_eq!(
        query_i64(
            &db,
            "select count(*) from (describe users) where column_name = 'birth_date'"
        ),
        0,
        "dropped"
    );
    let users = fixture_users();
    let with_mail = users.iter().filter(|u| u["mail"].is_string()).count() as i64;
    assert_eq!(
        query_i64(
            &db,
            "select count(*) from users where regexp_full_match(mail, '[0-9a-f]{64}')"
        ),
        with_mail,
        "every mail is a 64-hex HMAC"
    );
    assert_eq!(
        query_i64(&db, "select count(*) from users where mail like '%@%'"),
        0
    );
    server.shutdown().await;
}
