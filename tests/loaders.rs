//! Loading: write modes, incremental state stored with the data, runs
//! killed or interrupted at several points, and a second concurrent run.

mod common;

use std::path::Path;
use std::time::Duration;

use lucca_sync::sandbox::{Faults, Mutation, Sandbox, SandboxConfig, UserData};

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
fn published(dir: &Path) -> Vec<(std::path::PathBuf, u64)> {
    use std::hash::{Hash, Hasher};
    snapshot(dir)
        .into_iter()
        .filter(|(p, _)| {
            let name = p.to_string_lossy();
            !name.ends_with(".lock")
                && !name.contains(".tmp-")
                && !name.contains("/.lucca-sync/")
                && !name.contains(".link-")
        })
        .map(|(p, bytes)| {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            bytes.hash(&mut hasher);
            (p, hasher.finish())
        })
        .collect()
}

/// A query over the `users` stream of a DuckDB file or a Parquet directory
/// (`{t}` stands for the table).
fn users_query(out: &Path, parquet: bool, sql: &str) -> i64 {
    if parquet {
        query_parquet_i64(&out.join("users"), &sql.replace("{t}", "t"))
    } else {
        query_i64(out, &sql.replace("{t}", "users"))
    }
}

/// The stored cursor of the `users` stream.
fn stored_cursor(out: &Path, parquet: bool) -> String {
    if parquet {
        // `users` leads to the published version's directory, named by run.
        let version = std::fs::canonicalize(out.join("users")).unwrap_or_else(|e| panic!("{e}"));
        let name = version.file_name().unwrap_or_default().to_string_lossy();
        let state = out
            .join(".lucca-sync/users")
            .join(format!("{name}.state.json"));
        let text = std::fs::read_to_string(&state).unwrap_or_else(|e| panic!("{e}"));
        let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        json["cursor"].as_str().unwrap_or_default().to_owned()
    } else {
        query_string(
            out,
            "select cursor from _lucca_sync_state where stream = 'users'",
        )
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_incremental_cursor_the_records_lack_is_reported() {
    // The endpoint spells it `modifiedAt`; the pipeline says `modifiedOn`.
    let server = sandbox(SandboxConfig::default()).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (destination, _) = duckdb_destination(dir.path());
    let extra = "    write_mode: merge\n    incremental: { cursor_field: modifiedOn }\n";
    let path = pipeline(dir.path(), &destination, extra, "unlimited");
    let yaml = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&path, yaml.replace("modifiedAt]", "modifiedOn]"))
        .unwrap_or_else(|e| panic!("{e}"));
    let run = lucca_sync(&["run", &path], &server.base_url(), KEY).await;
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    let stderr = text(&run.stderr);
    assert!(
        stderr.contains("had a date, datetime or integer `modifiedOn`: no cursor is stored"),
        "{stderr}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn incremental_merge_updates_changed_rows_without_duplicates_and_keeps_state_with_data() {
    for parquet in [false, true] {
        let server = sandbox(SandboxConfig {
            users: UserData::Synthetic(3_000),
            faults: Faults {
                // After the first run's 3 pages and its check of the full
                // last page.
                mutate_after: Some((
                    4,
                    Mutation {
                        insert: 5,
                        delete: vec![],
                        touch: vec![7, 2_000],
                    },
                )),
                ..Faults::default()
            },
            ..SandboxConfig::default()
        })
        .await;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (destination, out) = if parquet {
            parquet_destination(dir.path())
        } else {
            duckdb_destination(dir.path())
        };
        let extra = "    write_mode: merge\n    incremental: { cursor_field: modifiedAt }\n";
        let path = pipeline(dir.path(), &destination, extra, "unlimited");
        let count = |sql: &str| users_query(&out, parquet, sql);
        let modified = |id: i64| {
            count(&format!(
                "select epoch_ms(modified_at) from {{t}} where id = {id}"
            ))
        };

        let run = lucca_sync(&["run", &path], &server.base_url(), KEY).await;
        assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
        assert_eq!(count("select count(*) from {t}"), 3_000);
        let first_cursor = stored_cursor(&out, parquet);
        let state_updated = || {
            (!parquet).then(|| {
                query_i64(
                    &out,
                    "select epoch_us(updated_at) from _lucca_sync_state where stream = 'users'",
                )
            })
        };
        let first_update = state_updated();
        let touched_before = modified(7);
        assert!(!server.requests()[0].query.contains("since"));

        let run = lucca_sync(&["run", &path], &server.base_url(), KEY).await;
        assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
        let second = server.requests().into_iter().skip(4).collect::<Vec<_>>();
        assert!(
            second[0].query.contains("modifiedAt=since"),
            "the second run asks only for changes: {}",
            second[0].query
        );
        assert_eq!(count("select count(*) from {t}"), 3_005, "new rows added");
        assert_eq!(
            count("select count(distinct id) from {t}"),
            3_005,
            "no duplicates"
        );
        assert!(modified(7) > touched_before, "the edited row was updated");
        let second_cursor = stored_cursor(&out, parquet);
        assert!(
            state_updated() > first_update || parquet,
            "updated_at moves"
        );
        assert!(
            second_cursor > first_cursor,
            "{second_cursor} > {first_cursor}"
        );

        // --full-refresh ignores the state.
        let run = lucca_sync(&["run", "--full-refresh", &path], &server.base_url(), KEY).await;
        assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
        let last = server
            .requests()
            .pop()
            .unwrap_or_else(|| panic!("requests"));
        assert!(!last.query.contains("since"), "{}", last.query);
        assert_eq!(count("select count(*) from {t}"), 3_005);
        server.shutdown().await;
    }
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

/// Fixture users whose `field` is set (not null).
fn fixture_users_with(field: &str) -> i64 {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/users.json"))
        .unwrap_or_else(|e| panic!("{e}"));
    let users: Vec<serde_json::Value> =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    users.iter().filter(|u| !u[field].is_null()).count() as i64
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
            latency: Duration::from_millis(200),
            ..Faults::default()
        },
        ..SandboxConfig::default()
    })
    .await;
    // 10 pages of 200 ms: every kill lands inside the run.
    for parquet in [false, true] {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (destination, out) = if parquet {
            parquet_destination(dir.path())
        } else {
            duckdb_destination(dir.path())
        };
        let path = pipeline(
            dir.path(),
            &destination,
            "    page_size: 400\n",
            "unlimited",
        );
        let started = std::time::Instant::now();
        let run = lucca_sync(&["run", &path], &server.base_url(), KEY).await;
        assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
        assert!(
            started.elapsed() > Duration::from_millis(1_700),
            "a whole run outlasts the last kill point"
        );
        let out_dir = dir.path().join("out");
        let before = published(&out_dir);
        for delay_ms in [50u64, 400, 800, 1_200, 1_600] {
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
            assert_eq!(
                published(&out_dir),
                before,
                "parquet={parquet}: killed after {delay_ms} ms"
            );
            assert_eq!(
                users_query(&out, parquet, "select count(*) from {t}"),
                4_000
            );
        }
        // The next run clears what the killed ones left and succeeds.
        let run = lucca_sync(&["run", &path], &server.base_url(), KEY).await;
        assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
        let leftovers: Vec<_> = snapshot(&out_dir)
            .into_iter()
            .filter(|(p, _)| {
                let p = p.to_string_lossy();
                p.contains(".tmp-") || p.contains("staging-") || p.contains(".link-")
            })
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        if parquet {
            let versions = std::fs::read_dir(out.join(".lucca-sync/users"))
                .unwrap_or_else(|e| panic!("{e}"))
                .flatten()
                .filter(|e| e.path().is_dir())
                .count();
            assert_eq!(versions, 2, "the published version and the one before");
        }
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_run_is_recorded_and_a_count_mismatch_is_flagged() {
    for parquet in [false, true] {
        let server = sandbox(SandboxConfig {
            users: UserData::Synthetic(3_000),
            faults: Faults {
                // Inserted once the first two requests (the first page of
                // users among them, whatever the order of the streams)
                // have arrived: the count the API gave (3000) is not what
                // is loaded (3005).
                mutate_after: Some((
                    2,
                    Mutation {
                        insert: 5,
                        ..Mutation::default()
                    },
                )),
                forbidden_paths: vec!["/api/v3/departments".into()],
                ..Faults::default()
            },
            ..SandboxConfig::default()
        })
        .await;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (destination, out) = if parquet {
            parquet_destination(dir.path())
        } else {
            duckdb_destination(dir.path())
        };
        let departments = "  - name: departments\n    endpoint: /api/v3/departments\n    fields: [id, name]\n    primary_key: id\n";
        let path = pipeline(
            dir.path(),
            &destination,
            &format!("    page_size: 1000\n{departments}"),
            "unlimited",
        );
        let run = lucca_sync(&["run", &path], &server.base_url(), KEY).await;
        assert_eq!(run.status.code(), Some(4), "{}", text(&run.stderr));
        assert!(
            text(&run.stderr).contains("the API reported 3000 records but 3005 were read"),
            "{}",
            text(&run.stderr)
        );
        let user_requests = server
            .requests()
            .iter()
            .filter(|r| r.path == "/api/v3/users")
            .count() as i64;
        let run = lucca_sync(&["run", &path], &server.base_url(), KEY).await;
        assert_eq!(run.status.code(), Some(4), "{}", text(&run.stderr));

        let history = |sql: &str| {
            if parquet {
                query_parquet_i64(&out.join("_runs"), &sql.replace("{runs}", "t"))
            } else {
                query_i64(&out, &sql.replace("{runs}", "_lucca_sync_runs"))
            }
        };
        assert_eq!(
            history("select count(*) from {runs}"),
            4,
            "2 runs x 2 streams"
        );
        assert_eq!(history("select count(distinct run_id) from {runs}"), 2);
        assert_eq!(
            history("select count(*) from {runs} where count_mismatch"),
            1,
            "only the first run's users"
        );
        assert_eq!(
            history("select requests from {runs} where stream = 'users' and count_mismatch"),
            user_requests
        );
        assert_eq!(
            history(
                "select count(*) from {runs} where stream = 'users' and status = 'loaded' \
                 and rows_written = 3005 and api_count in (3000, 3005) and finished_at >= started_at"
            ),
            2
        );
        assert_eq!(
            history(
                "select count(*) from {runs} where stream = 'departments' and status = 'forbidden' \
                 and error like '%403 Forbidden%' and rows_written = 0"
            ),
            2
        );
        if parquet {
            assert_eq!(
                parquet_files(&out.join("_runs")).len(),
                2,
                "one file per run"
            );
        } else {
            assert_eq!(
                query_i64(&out, "select count(*) from lucca_sync_latest_runs"),
                2,
                "one row per stream"
            );
            assert_eq!(
                query_i64(
                    &out,
                    "select count(*) from lucca_sync_latest_runs where stream = 'users' and not count_mismatch"
                ),
                1,
                "the latest run of users"
            );
        }
        server.shutdown().await;
    }
}

/// Runs the users pipeline against a sandbox into a new DuckDB file and
/// checks that it succeeded; the directory lives as long as the result.
async fn users_into_duckdb(
    config: SandboxConfig,
    stream_extra: &str,
) -> (Sandbox, tempfile::TempDir, std::path::PathBuf) {
    let server = sandbox(config).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (destination, db) = duckdb_destination(dir.path());
    let pipeline = users_pipeline(dir.path(), &destination, stream_extra);
    let run = lucca_sync(
        &["run", pipeline.to_str().unwrap_or_default()],
        &server.base_url(),
        KEY,
    )
    .await;
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    (server, dir, db)
}

#[tokio::test(flavor = "multi_thread")]
async fn duckdb_tables_and_columns_carry_comments_from_the_pipeline() {
    let (server, _dir, db) = users_into_duckdb(SandboxConfig::default(), "").await;
    assert_eq!(
        query_string(
            &db,
            "select comment from duckdb_columns() where table_name = 'users' and column_name = 'department_name'"
        ),
        "Lucca field `department.name` of /api/v3/users"
    );
    assert_eq!(
        query_string(
            &db,
            "select comment from duckdb_tables() where table_name = 'users'"
        ),
        "Lucca /api/v3/users (stream `users` of pipeline `users`), loaded by lucca-sync"
    );
    server.shutdown().await;

    // Columns no `fields` entry names one by one: a renamed one, the
    // members of extendedData, a child table's.
    let server = sandbox(SandboxConfig::default()).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (destination, db) = duckdb_destination(dir.path());
    let yaml = format!(
        "version: 1\nname: t\nsource:\n  base_url: ${{LUCCA_BASE_URL}}\n  api_key: ${{LUCCA_API_KEY}}\n  rate_limit_per_minute: unlimited\nstreams:\n  - name: users\n    endpoint: /api/v3/users\n    fields: [id, lastName, extendedData, \"userWorkCycles[id,workCycleID]\"]\n    primary_key: id\n    columns: {{ surname: {{ path: lastName }} }}\ndestination:\n{destination}\n"
    );
    let path = dir.path().join("p.yaml");
    std::fs::write(&path, yaml).unwrap_or_else(|e| panic!("{e}"));
    let run = lucca_sync(&["run", &path.to_string_lossy()], &server.base_url(), KEY).await;
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    for (table, column, field) in [
        ("users", "surname", "lastName"),
        (
            "users",
            "extended_data_e_blood_type",
            "extendedData.e_bloodType",
        ),
        (
            "users__user_work_cycles",
            "work_cycle_id",
            "userWorkCycles.workCycleID",
        ),
    ] {
        assert_eq!(
            query_string(
                &db,
                &format!(
                    "select coalesce(comment, '') from duckdb_columns() \
                     where table_name = '{table}' and column_name = '{column}'"
                )
            ),
            format!("Lucca field `{field}` of /api/v3/users"),
            "{table}.{column}"
        );
    }
    server.shutdown().await;
}

/// DuckDB writes row groups of 30,720 rows (so that each is compressed
/// while the next pages arrive) and stores mostly distinct text with FSST,
/// text with few values with a dictionary, without analysing the others.
#[tokio::test(flavor = "multi_thread")]
async fn duckdb_row_groups_and_text_encodings_follow_the_data() {
    // A replaced table is the renamed stage table; a merged one is created
    // from it and must keep its encodings.
    for write_mode in ["replace", "merge"] {
        let (server, _dir, db) = users_into_duckdb(
            SandboxConfig::default().with_users(UserData::Synthetic(32_000)),
            &format!("    write_mode: {write_mode}\n"),
        )
        .await;
        assert_eq!(query_i64(&db, "select count(*) from users"), 32_000);
        assert_eq!(
            query_string(
                &db,
                "select string_agg(rows::varchar, ',' order by row_group_id) from \
                 (select row_group_id, sum(count) as rows from pragma_storage_info('users') \
                 where column_name = 'id' and segment_type = 'BIGINT' group by row_group_id)"
            ),
            "30720,1280",
            "{write_mode}"
        );
        let ddl = query_string(
            &db,
            "select sql from duckdb_tables() where table_name = 'users'",
        );
        assert!(ddl.contains("mail VARCHAR USING COMPRESSION FSST"), "{ddl}");
        assert!(
            ddl.contains("department_name VARCHAR USING COMPRESSION Dictionary"),
            "{ddl}"
        );
        assert!(ddl.contains("id BIGINT,"), "{ddl}");
        server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn parquet_partitions_are_hive_directories_and_merge_keeps_one_row_per_key() {
    let server = sandbox(SandboxConfig {
        users: UserData::Synthetic(2_000),
        ..SandboxConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (destination, out) = parquet_destination(dir.path());
    let extra = "    write_mode: merge\n    partition_by: [legal_entity_id]\n";
    let text_pipeline = format!(
        "version: 1\nname: t\nsource:\n  base_url: ${{LUCCA_BASE_URL}}\n  api_key: ${{LUCCA_API_KEY}}\n  rate_limit_per_minute: unlimited\nstreams:\n  - name: users\n    endpoint: /api/v3/users\n    params: {{ formerEmployees: \"true\" }}\n    fields: [id, lastName, legalEntityId]\n    primary_key: id\n{extra}destination:\n{destination}\n"
    );
    let path = dir.path().join("p.yaml");
    std::fs::write(&path, text_pipeline).unwrap_or_else(|e| panic!("{e}"));
    let path = path.to_string_lossy().into_owned();
    for _ in 0..2 {
        let run = lucca_sync(&["run", &path], &server.base_url(), KEY).await;
        assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    }
    let files = parquet_files(&out.join("users"));
    let mut partitions: Vec<String> = files
        .iter()
        .map(|f| {
            let parent = f.parent().unwrap_or_else(|| panic!("{}", f.display()));
            parent
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    partitions.sort();
    partitions.dedup();
    assert!(partitions.len() >= 2, "{partitions:?}");
    assert!(
        partitions.iter().all(|p| p.starts_with("legal_entity_id=")),
        "{partitions:?}"
    );
    for batch in read_parquet_dir(&out.join("users")) {
        assert!(
            batch.column_by_name("legal_entity_id").is_none(),
            "the partition column lives in the directory names"
        );
    }
    let users = out.join("users");
    assert_eq!(
        query_parquet_i64(&users, "select count(*) from t"),
        query_parquet_i64(&users, "select count(distinct id) from t"),
        "no duplicate after two merges"
    );
    assert_eq!(query_parquet_i64(&users, "select count(*) from t"), 2_000);
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
    // Once the first page is asked for, the run is under way.
    let waiting = std::time::Instant::now();
    while server.requests().is_empty() && waiting.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
    // Each stream is summed up as stopped, with the requests it sent.
    let stderr = text(&out.stderr);
    let summaries: Vec<serde_json::Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "stream summary")
        .collect();
    assert!(!summaries.is_empty(), "{stderr}");
    assert!(
        summaries.iter().all(|v| v["status"] == "stopped"),
        "{stderr}"
    );
    let requests: u64 = summaries
        .iter()
        .map(|v| v["requests"].as_u64().unwrap_or_default())
        .sum();
    assert!(requests >= 1, "{stderr}");
    assert!(
        text(&out.stdout).contains("stopped"),
        "{}",
        text(&out.stdout)
    );
    server.shutdown().await;
}

/// A signal that arrives once the run is publishing (here: as it renames
/// the new DuckDB file into place, injected by strace) lets the publish
/// finish; the run then says so and exits 0, not 130 ("nothing was
/// written"), which would make a scheduler retry an append already done.
#[tokio::test(flavor = "multi_thread")]
async fn a_signal_during_the_publish_exits_with_the_runs_own_code() {
    if std::process::Command::new("strace")
        .arg("-V")
        .output()
        .is_err()
    {
        eprintln!("strace is not installed: skipped (.ci/run installs it)");
        return;
    }
    let server = sandbox(SandboxConfig::default().with_users(UserData::Synthetic(300))).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (destination, db) = duckdb_destination(dir.path());
    let path = pipeline(
        dir.path(),
        &destination,
        "    write_mode: append\n",
        "unlimited",
    );
    let first = lucca_sync(&["run", &path], &server.base_url(), KEY).await;
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let out = tokio::process::Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null"])
        .args(["-e", "trace=rename,renameat,renameat2"])
        .args([
            "-e",
            "inject=rename,renameat,renameat2:signal=SIGTERM:when=1",
        ])
        .arg(env!("CARGO_BIN_EXE_lucca-sync"))
        .args(["run", &path])
        .env("LUCCA_BASE_URL", server.base_url())
        .env("LUCCA_API_KEY", KEY)
        .env("LUCCA_SYNC_LOG_FORMAT", "json")
        .output()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    // Said even when tokio's signal task has not run yet as the publish
    // ends (its own "signal received" line may then come late or never).
    assert!(
        stderr.contains("the signal came while the pipeline was publishing: it is published"),
        "{stderr}"
    );
    assert_eq!(
        query_i64(&db, "select count(*) from users"),
        600,
        "appended twice"
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
    let error = text(&second.stderr);
    assert!(error.contains("another lucca-sync run is writing this destination"));
    assert_eq!(
        error.matches("pipeline `t`").count(),
        1,
        "named once: {error}"
    );
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

#[tokio::test(flavor = "multi_thread")]
async fn a_new_field_becomes_a_new_column_and_old_rows_keep_theirs() {
    let server = sandbox(SandboxConfig::default()).await;
    for parquet in [false, true] {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (destination, out) = if parquet {
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
        let run = lucca_sync(&["run", &path], &server.base_url(), KEY).await;
        assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
        // The next night the pipeline asks for one more field.
        let widened = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{e}"))
            .replace(
                "fields: [id, lastName, modifiedAt]",
                "fields: [id, lastName, modifiedAt, mail]",
            );
        std::fs::write(&path, widened).unwrap_or_else(|e| panic!("{e}"));
        let run = lucca_sync(&["run", &path], &server.base_url(), KEY).await;
        assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));

        let fixture = query_fixture_count();
        assert_eq!(
            users_query(&out, parquet, "select count(*) from {t}"),
            2 * fixture,
            "parquet={parquet}"
        );
        let with_mail = fixture_users_with("mail");
        assert_eq!(
            users_query(
                &out,
                parquet,
                "select count(*) from {t} where mail is not null"
            ),
            with_mail,
            "parquet={parquet}: the second run's rows have a mail"
        );
        assert_eq!(
            users_query(
                &out,
                parquet,
                "select count(distinct _lucca_sync_run_id) from {t} where mail is not null"
            ),
            1,
            "parquet={parquet}: the first run's rows have none"
        );
        if parquet {
            // Every file carries the new column: readers see one schema.
            for batch in read_parquet_dir(&out.join("users")) {
                assert!(batch.column_by_name("mail").is_some());
            }
        }
    }
    server.shutdown().await;
}

/// The run whose files a Parquet table shows (`{run_id}-0.parquet`).
fn runs_shown(table: &Path) -> std::collections::BTreeSet<String> {
    parquet_files(table)
        .iter()
        .filter_map(|f| {
            let name = f.file_name()?.to_string_lossy().into_owned();
            Some(name.strip_suffix("-0.parquet")?.to_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_parquet_run_killed_at_any_step_of_its_publish_shows_one_run_in_every_table() {
    if std::process::Command::new("strace")
        .arg("-V")
        .output()
        .is_err()
    {
        eprintln!("strace is not installed: skipped (.ci/run installs it)");
        return;
    }
    let server = sandbox(SandboxConfig::default().with_users(UserData::Synthetic(300))).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (destination, out) = parquet_destination(dir.path());
    let yaml = format!(
        "version: 1\nname: t\nsource:\n  base_url: ${{LUCCA_BASE_URL}}\n  api_key: ${{LUCCA_API_KEY}}\n  rate_limit_per_minute: unlimited\nstreams:\n  - name: users\n    endpoint: /api/v3/users\n    fields: [id, lastName, \"userWorkCycles[id,workCycleID]\"]\n    primary_key: id\n  - name: departments\n    endpoint: /api/v3/departments\n    fields: [id, name]\ndestination:\n{destination}\n"
    );
    let path = dir.path().join("p.yaml");
    std::fs::write(&path, yaml).unwrap_or_else(|e| panic!("{e}"));
    let path = path.to_string_lossy().into_owned();
    let first = lucca_sync(&["run", &path], &server.base_url(), KEY).await;
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let tables = ["users", "users__user_work_cycles", "departments"];
    let users = query_parquet_i64(&out.join("users"), "select count(*) from t");
    let mut published = runs_shown(&out.join("users"));
    // Killed at a thread's n-th rename, then at its n-th symbolic link
    // made, directory made or file removed, for every n until a run gets
    // through.
    let mut killed_after_publish = 0;
    for calls in [
        "rename,renameat,renameat2",
        "symlink,symlinkat",
        "mkdir,mkdirat",
        "unlink,unlinkat,rmdir",
    ] {
        for when in 1..30 {
            let out_status = tokio::process::Command::new("strace")
                .args(["-f", "-qq", "-o", "/dev/null"])
                .args(["-e", &format!("trace={calls}")])
                .args(["-e", &format!("inject={calls}:signal=SIGKILL:when={when}")])
                .arg(env!("CARGO_BIN_EXE_lucca-sync"))
                .args(["run", &path])
                .env("LUCCA_BASE_URL", server.base_url())
                .env("LUCCA_API_KEY", KEY)
                .env("LUCCA_SYNC_LOG_FORMAT", "json")
                .output()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let shown: std::collections::BTreeSet<String> = tables
                .iter()
                .flat_map(|t| runs_shown(&out.join(t)))
                .collect();
            assert_eq!(
                shown.len(),
                1,
                "killed at {calls} #{when}: the tables show {shown:?}"
            );
            assert_eq!(
                query_parquet_i64(&out.join("users"), "select count(*) from t"),
                users
            );
            if out_status.status.code() == Some(0) {
                break;
            }
            if !shown.is_subset(&published) {
                killed_after_publish += 1;
            }
            published.extend(shown);
        }
    }
    assert!(killed_after_publish > 0, "no kill point after a publish");
    // The next run files the history of a run killed right after its
    // publish: every run whose tables were shown has its history.
    let last = lucca_sync(&["run", &path], &server.base_url(), KEY).await;
    assert_eq!(last.status.code(), Some(0), "{}", text(&last.stderr));
    for run in &published {
        assert!(
            out.join("_runs").join(format!("{run}.parquet")).exists(),
            "no history for {run}"
        );
    }
    let leftovers: Vec<_> = snapshot(&out)
        .into_iter()
        .filter(|(p, _)| {
            let p = p.to_string_lossy();
            p.contains("staging-") || p.contains(".link-") || p.contains(".new-")
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_merge_keyed_on_a_renamed_field_merges_its_child_tables_too() {
    let server = sandbox(SandboxConfig::default().with_users(UserData::Synthetic(30))).await;
    for parquet in [false, true] {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (destination, out) = if parquet {
            parquet_destination(dir.path())
        } else {
            duckdb_destination(dir.path())
        };
        let yaml = format!(
            "version: 1\nname: t\nsource:\n  base_url: ${{LUCCA_BASE_URL}}\n  api_key: ${{LUCCA_API_KEY}}\n  rate_limit_per_minute: unlimited\nstreams:\n  - name: users\n    endpoint: /api/v3/users\n    fields: [id, lastName, \"userWorkCycles[id,workCycleID]\"]\n    primary_key: id\n    write_mode: merge\n    columns: {{ user_key: {{ path: id }} }}\ndestination:\n{destination}\n"
        );
        let path = dir.path().join("p.yaml");
        std::fs::write(&path, yaml).unwrap_or_else(|e| panic!("{e}"));
        let path = path.to_string_lossy().into_owned();
        for _ in 0..2 {
            let run = lucca_sync(&["run", &path], &server.base_url(), KEY).await;
            assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
        }
        let sql = "select count(*) from {t} where users_user_key is null";
        let orphans = if parquet {
            query_parquet_i64(
                &out.join("users__user_work_cycles"),
                &sql.replace("{t}", "t"),
            )
        } else {
            query_i64(&out, &sql.replace("{t}", "users__user_work_cycles"))
        };
        assert_eq!(orphans, 0, "parquet={parquet}");
        let items = "select count(*) from {t}";
        let once = if parquet {
            query_parquet_i64(
                &out.join("users__user_work_cycles"),
                &items.replace("{t}", "t"),
            )
        } else {
            query_i64(&out, &items.replace("{t}", "users__user_work_cycles"))
        };
        assert!(once > 0, "parquet={parquet}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_duckdb_file_another_program_writes_is_neither_replaced_nor_corrupted() {
    let server = sandbox(SandboxConfig::default().with_users(UserData::Synthetic(30))).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (destination, db) = duckdb_destination(dir.path());
    let path = pipeline(dir.path(), &destination, "", "unlimited");
    let run = lucca_sync(&["run", &path], &server.base_url(), KEY).await;
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    let users = query_i64(&db, "select count(*) from users");
    let wal = db.with_file_name("lucca.duckdb.wal");

    // A program with a read-write connection: the run refuses, the file
    // stays as it was. (Read before the connection opens: closing any file
    // of this process on the database would release DuckDB's lock.)
    let before = std::fs::read(&db).unwrap_or_else(|e| panic!("{e}"));
    let writer = duckdb::Connection::open(&db).unwrap_or_else(|e| panic!("{e}"));
    let run = lucca_sync(&["run", &path], &server.base_url(), KEY).await;
    assert_eq!(run.status.code(), Some(1), "{}", text(&run.stderr));
    assert!(
        text(&run.stderr).contains("another program has this DuckDB file open for writing"),
        "{}",
        text(&run.stderr)
    );
    assert_eq!(std::fs::read(&db).unwrap_or_else(|e| panic!("{e}")), before);

    // The same program edits rows and dies before its checkpoint: its
    // write-ahead log stays beside the file (copied here as it was on
    // disk, before the connection closes and checkpoints).
    writer
        .execute_batch(
            "DELETE FROM users WHERE id = (SELECT min(id) FROM users); \
             UPDATE users SET last_name = 'EDITED' WHERE id = (SELECT max(id) FROM users);",
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let crashed = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (destination, crashed_db) = duckdb_destination(crashed.path());
    std::fs::create_dir_all(crashed_db.parent().unwrap_or(crashed.path()))
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::copy(&db, &crashed_db).unwrap_or_else(|e| panic!("{e}"));
    std::fs::copy(&wal, crashed_db.with_file_name("lucca.duckdb.wal"))
        .unwrap_or_else(|e| panic!("{e}"));
    drop(writer);
    let path = pipeline(crashed.path(), &destination, "", "unlimited");
    let run = lucca_sync(&["run", &path], &server.base_url(), KEY).await;
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    // The log was not replayed onto the new file: every user, as served.
    assert!(!crashed_db.with_file_name("lucca.duckdb.wal").exists());
    assert_eq!(query_i64(&crashed_db, "select count(*) from users"), users);
    assert_eq!(
        query_i64(
            &crashed_db,
            "select count(*) from users where last_name = 'EDITED'"
        ),
        0
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_duckdb_path_that_is_a_link_updates_the_file_it_leads_to() {
    let server = sandbox(SandboxConfig::default().with_users(UserData::Synthetic(30))).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (destination, real) = duckdb_destination(dir.path());
    let path = pipeline(dir.path(), &destination, "", "unlimited");
    let run = lucca_sync(&["run", &path], &server.base_url(), KEY).await;
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    // `current.duckdb` -> `out/lucca.duckdb`, as a deployment might point
    // its BI tool at a stable name.
    let link = dir.path().join("current.duckdb");
    std::os::unix::fs::symlink(&real, &link).unwrap_or_else(|e| panic!("{e}"));
    let destination = format!("  duckdb: {{ path: {} }}", link.display());
    let path = pipeline(
        dir.path(),
        &destination,
        "    write_mode: append\n",
        "unlimited",
    );
    let run = lucca_sync(&["run", &path], &server.base_url(), KEY).await;
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    assert!(std::fs::read_link(&link).is_ok(), "still a link");
    assert_eq!(query_i64(&real, "select count(*) from users"), 60);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_incremental_append_does_not_append_a_record_read_again() {
    for parquet in [false, true] {
        // Request 3 (the third run's) finds user 5 edited.
        let server = sandbox(SandboxConfig {
            users: UserData::Synthetic(200),
            faults: Faults {
                mutate_after: Some((
                    2,
                    Mutation {
                        touch: vec![5],
                        ..Mutation::default()
                    },
                )),
                ..Faults::default()
            },
            ..SandboxConfig::default()
        })
        .await;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (destination, out) = if parquet {
            parquet_destination(dir.path())
        } else {
            duckdb_destination(dir.path())
        };
        let yaml = format!(
            "version: 1\nname: t\nsource:\n  base_url: ${{LUCCA_BASE_URL}}\n  api_key: ${{LUCCA_API_KEY}}\n  rate_limit_per_minute: unlimited\nstreams:\n  - name: users\n    endpoint: /api/v3/users\n    params: {{ formerEmployees: \"true\" }}\n    fields: [id, lastName, modifiedAt, \"userWorkCycles[id,workCycleID]\"]\n    primary_key: id\n    write_mode: append\n    incremental: {{ cursor_field: modifiedAt, lookback_secs: 86400 }}\ndestination:\n{destination}\n"
        );
        let path = dir.path().join("p.yaml");
        std::fs::write(&path, yaml).unwrap_or_else(|e| panic!("{e}"));
        let path = path.to_string_lossy().into_owned();
        let count = |table: &str, filter: &str| {
            let sql = format!("select count(*) from {{t}} {filter}");
            if parquet {
                query_parquet_i64(&out.join(table), &sql.replace("{t}", "t"))
            } else {
                query_i64(&out, &sql.replace("{t}", table))
            }
        };
        let mut counts = Vec::new();
        for _ in 0..3 {
            let run = lucca_sync(&["run", &path], &server.base_url(), KEY).await;
            assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
            counts.push((
                count("users", ""),
                count("users__user_work_cycles", ""),
                count("users", "where id = 5"),
            ));
        }
        let (users, items, _) = counts[0];
        assert_eq!(users, 200, "parquet={parquet}");
        // The second run re-reads the last day before the cursor: nothing
        // new. The third finds user 5 edited: one more version of it, with
        // its items.
        assert_eq!(counts[1], (users, items, 1), "parquet={parquet}");
        let (users3, items3, fives) = counts[2];
        assert_eq!((users3, fives), (users + 1, 2), "parquet={parquet}");
        assert!(items3 > items, "parquet={parquet}: {items3} items");
        // Rows left out as read again are no count mismatch.
        let mismatches = if parquet {
            query_parquet_i64(
                &out.join("_runs"),
                "select count(*) from t where count_mismatch",
            )
        } else {
            query_i64(
                &out,
                "select count(*) from _lucca_sync_runs where count_mismatch",
            )
        };
        assert_eq!(mismatches, 0, "parquet={parquet}");
        server.shutdown().await;
    }
}
