//! The typed, BI-ready schema end to end: the real binary against the
//! sandbox, checked with DuckDB's own `DESCRIBE`, child tables joined back
//! to their parent, schema drift in each mode across two runs.

mod common;

use std::path::{Path, PathBuf};

use lucca_sync::sandbox::SandboxConfig;

use common::*;

fn fixture_users() -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/users.json"))
        .unwrap_or_else(|e| panic!("{e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"))
}

/// A users pipeline with these fields and extra stream lines.
fn pipeline(dir: &Path, destination: &str, fields: &[&str], extra: &str) -> PathBuf {
    let fields: String = fields
        .iter()
        .map(|f| format!("\n      - \"{f}\""))
        .collect();
    let text = format!(
        "version: 1\nname: users\nsource:\n  base_url: ${{LUCCA_BASE_URL}}\n  api_key: ${{LUCCA_API_KEY}}\n  rate_limit_per_minute: unlimited\nstreams:\n  - name: users\n    endpoint: /api/v3/users\n    params: {{ formerEmployees: \"true\" }}\n    fields:{fields}\n    primary_key: id\n{extra}destination:\n{destination}\n"
    );
    let path = dir.join("users.yaml");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    path
}

/// `column:TYPE` of a table, in table order, from `DESCRIBE`.
fn describe(db: &Path, table: &str) -> Vec<String> {
    let config = duckdb::Config::default()
        .access_mode(duckdb::AccessMode::ReadOnly)
        .unwrap_or_else(|e| panic!("{e}"));
    let conn = duckdb::Connection::open_with_flags(db, config).unwrap_or_else(|e| panic!("{e}"));
    let mut stmt = conn
        .prepare(&format!("DESCRIBE {table}"))
        .unwrap_or_else(|e| panic!("{e}"));
    stmt.query_map([], |row| {
        Ok(format!(
            "{}:{}",
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?
        ))
    })
    .unwrap_or_else(|e| panic!("{e}"))
    .map(|r| r.unwrap_or_else(|e| panic!("{e}")))
    .collect()
}

async fn run(pipeline: &Path, base_url: &str, extra_args: &[&str]) -> std::process::Output {
    let mut args = vec!["run", pipeline.to_str().unwrap_or_default()];
    args.extend_from_slice(extra_args);
    lucca_sync(&args, base_url, KEY).await
}

#[tokio::test(flavor = "multi_thread")]
async fn duckdb_types_child_tables_and_declared_columns() {
    let server = sandbox(SandboxConfig::default()).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (destination, db) = duckdb_destination(dir.path());
    let fields = [
        "id",
        "employeeNumber",
        "birthDate",
        "modifiedAt",
        "dtContractStart",
        "cultureID",
        "manager[id,name]",
        "extendedData",
        "userWorkCycles[id,workCycleID,startsOn,endsOn]",
    ];
    let extra = "    write_mode: merge\n    columns:\n      employee_number: { type: \"decimal(9,0)\" }\n      blood_type: { path: extendedData.e_bloodType }\n";
    let path = pipeline(dir.path(), &destination, &fields, extra);
    let out = run(&path, &server.base_url(), &[]).await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));

    let users = describe(&db, "users");
    for expected in [
        "id:BIGINT",
        "employee_number:DECIMAL(9,0)",
        "birth_date:TIMESTAMP",
        "modified_at:TIMESTAMP",
        "culture_id:BIGINT",
        "manager_id:BIGINT",
        "manager_name:VARCHAR",
        "blood_type:VARCHAR",
        "extended_data_e_tshirt_id:BIGINT",
    ] {
        assert!(
            users.contains(&expected.to_owned()),
            "{expected} not in {users:?}"
        );
    }
    assert!(
        !users.iter().any(|c| c.starts_with("user_work_cycles")),
        "arrays of objects are not parent columns: {users:?}"
    );
    assert_eq!(
        describe(&db, "users__user_work_cycles"),
        [
            "users_id:BIGINT",
            "list_index:BIGINT",
            "id:BIGINT",
            "work_cycle_id:BIGINT",
            "starts_on:TIMESTAMP",
            "ends_on:TIMESTAMP"
        ]
    );

    // Every item of every fixture array, joined back to its user.
    let fixture = fixture_users();
    let items: usize = fixture
        .iter()
        .map(|u| u["userWorkCycles"].as_array().map_or(0, Vec::len))
        .sum();
    assert!(items > 0);
    let joined = query_i64(
        &db,
        "select count(*) from users__user_work_cycles c join users u on u.id = c.users_id",
    );
    assert_eq!(joined as usize, items);
    let with_cycles = fixture
        .iter()
        .find(|u| {
            u["userWorkCycles"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
        })
        .unwrap_or_else(|| panic!("a user with work cycles"));
    let first_cycle = &with_cycles["userWorkCycles"][0];
    assert_eq!(
        query_i64(
            &db,
            &format!(
                "select work_cycle_id from users__user_work_cycles where users_id = {} and list_index = 0",
                with_cycles["id"]
            )
        ),
        first_cycle["workCycleID"].as_i64().unwrap_or(-1)
    );

    // A second merge run rewrites each user's items, never duplicates them.
    let out = run(&path, &server.base_url(), &[]).await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(
        query_i64(&db, "select count(*) from users__user_work_cycles") as usize,
        items
    );
    assert_eq!(
        query_i64(&db, "select count(*) from users") as usize,
        fixture.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn schema_drift_fail_then_add_then_ignore() {
    let server = sandbox(SandboxConfig::default()).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (destination, db) = duckdb_destination(dir.path());
    // Night 1: only the blood type of extendedData.
    let path = pipeline(
        dir.path(),
        &destination,
        &["id", "extendedData[e_bloodType]"],
        "",
    );
    let out = run(&path, &server.base_url(), &[]).await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let before = describe(&db, "users");
    assert_eq!(before, ["id:BIGINT", "extended_data_e_blood_type:VARCHAR"]);

    // Night 2: the whole extendedData, with on_schema_change: fail.
    let path = pipeline(
        dir.path(),
        &destination,
        &["id", "extendedData"],
        "    on_schema_change: fail\n",
    );
    let out = run(&path, &server.base_url(), &[]).await;
    assert_eq!(out.status.code(), Some(1), "stderr: {}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("new field `extendedData.e_")
            && stderr.contains("on_schema_change is fail"),
        "{stderr}"
    );
    assert_eq!(
        describe(&db, "users"),
        before,
        "a failed stream keeps its table"
    );

    // With ignore: nothing new stored, but reported in the summary.
    let summary = dir.path().join("summary.json");
    let path = pipeline(
        dir.path(),
        &destination,
        &["id", "extendedData"],
        "    on_schema_change: ignore\n",
    );
    let out = run(
        &path,
        &server.base_url(),
        &["--summary-json", summary.to_str().unwrap_or_default()],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(describe(&db, "users"), before);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&summary).unwrap_or_default()).unwrap_or_default();
    let changes = &json["pipelines"][0]["streams"][0]["schema_changes"];
    assert!(
        changes
            .as_array()
            .is_some_and(|c| !c.is_empty() && c.iter().all(|c| c["action"] == "ignored")),
        "{json}"
    );

    // With add (the default): new nullable columns, reported.
    let path = pipeline(dir.path(), &destination, &["id", "extendedData"], "");
    let out = run(
        &path,
        &server.base_url(),
        &["--summary-json", summary.to_str().unwrap_or_default()],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let after = describe(&db, "users");
    assert!(
        after.contains(&"extended_data_e_tshirt_id:BIGINT".to_owned()),
        "{after:?}"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&summary).unwrap_or_default()).unwrap_or_default();
    let changes = json["pipelines"][0]["streams"][0]["schema_changes"].to_string();
    assert!(
        changes.contains("extended_data_e_tshirt_id") && changes.contains("added"),
        "{changes}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn parquet_child_tables_are_directories_of_their_own() {
    let server = sandbox(SandboxConfig::default()).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (destination, out_dir) = parquet_destination(dir.path());
    let path = pipeline(
        dir.path(),
        &destination,
        &["id", "userWorkCycles[id,workCycleID,startsOn]"],
        "    write_mode: merge\n",
    );
    for _ in 0..2 {
        let out = run(&path, &server.base_url(), &[]).await;
        assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    }
    let items: usize = fixture_users()
        .iter()
        .map(|u| u["userWorkCycles"].as_array().map_or(0, Vec::len))
        .sum();
    let rows: usize = read_parquet_dir(&out_dir.join("users__user_work_cycles"))
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(rows, items, "merged twice, each item once");
}

#[tokio::test(flavor = "multi_thread")]
async fn schema_command_declared_and_sampled() {
    let server = sandbox(SandboxConfig::default()).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (destination, db) = duckdb_destination(dir.path());
    let path = pipeline(
        dir.path(),
        &destination,
        &[
            "id",
            "birthDate",
            "manager[id,name]",
            "userWorkCycles[id,startsOn]",
        ],
        "    columns:\n      birth_date: { type: date }\n",
    );
    let p = path.to_str().unwrap_or_default();

    let declared = lucca_sync(&["schema", p], &server.base_url(), KEY).await;
    assert_eq!(
        declared.status.code(),
        Some(0),
        "{}",
        text(&declared.stderr)
    );
    let stdout = text(&declared.stdout);
    assert!(
        stdout.contains("birth_date") && stdout.contains("DATE"),
        "{stdout}"
    );
    assert!(stdout.contains("inferred at run time"), "{stdout}");
    assert_eq!(
        server.request_count(),
        0,
        "without --sample nothing is sent"
    );

    let sampled = lucca_sync(
        &["schema", "--sample", p, "--json"],
        &server.base_url(),
        KEY,
    )
    .await;
    assert_eq!(sampled.status.code(), Some(0), "{}", text(&sampled.stderr));
    let columns: serde_json::Value =
        serde_json::from_slice(&sampled.stdout).unwrap_or_else(|e| panic!("{e}"));
    let find = |table: &str, column: &str| {
        columns
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|c| c["table"] == table && c["column"] == column)
            })
            .map(|c| c["type"].as_str().unwrap_or_default().to_owned())
    };
    assert_eq!(find("users", "manager_id").as_deref(), Some("BIGINT"));
    assert_eq!(find("users", "birth_date").as_deref(), Some("DATE"));
    assert_eq!(
        find("users__user_work_cycles", "starts_on").as_deref(),
        Some("TIMESTAMP")
    );
    assert_eq!(server.request_count(), 1, "one page sampled");
    assert!(!db.exists(), "schema writes nothing");
}
