//! The shipped pipelines (`pipelines/*.yaml`, written with catalog names)
//! run against the sandbox: every stream lands rows in DuckDB, the tables
//! join (users x departments x leaves), leaves are read one window at a
//! time, and an incremental run re-reads only the recent windows.

mod common;

use std::path::{Path, PathBuf};

use lucca_sync::sandbox::{SandboxConfig, UserData};

use common::*;

const SHIPPED: [&str; 6] = [
    "users",
    "organization",
    "absences",
    "time",
    "expenses",
    "all",
];

/// A copy of shipped pipeline `name` in `dir`, without the request budget
/// (the sandbox is local) and writing to `dir/out/lucca.duckdb`.
fn local_copy(name: &str, dir: &Path) -> (PathBuf, PathBuf) {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("pipelines/{name}.yaml"));
    let text = std::fs::read_to_string(&shipped).unwrap_or_else(|e| panic!("{e}"));
    let db = dir.join("out").join("lucca.duckdb");
    assert!(text.contains("  api_key: ${LUCCA_API_KEY}"), "{name}");
    assert!(
        text.contains("duckdb: { path: out/lucca.duckdb }"),
        "{name}"
    );
    let text = text
        .replacen(
            "  api_key: ${LUCCA_API_KEY}",
            "  api_key: ${LUCCA_API_KEY}\n  rate_limit_per_minute: unlimited",
            1,
        )
        .replace(
            "duckdb: { path: out/lucca.duckdb }",
            &format!("duckdb: {{ path: {} }}", db.display()),
        );
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    (path, db)
}

/// The streams of a pipeline, by table name.
fn tables(path: &Path) -> Vec<String> {
    let p = lucca_sync::pipeline::load_with(path, &|name| match name {
        "LUCCA_BASE_URL" => Some("http://127.0.0.1:1".into()),
        "LUCCA_API_KEY" => Some("k".into()),
        _ => None,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    p.streams.iter().map(|s| s.name().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_shipped_pipeline_loads_rows_that_join() {
    let server = sandbox(SandboxConfig::default().with_users(UserData::Synthetic(300))).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut db = PathBuf::new();
    for name in SHIPPED {
        let (path, out_db) = local_copy(name, dir.path());
        db = out_db;
        let out = lucca_sync(
            &["run", path.to_str().unwrap_or_default()],
            &server.base_url(),
            KEY,
        )
        .await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name}: stderr: {}",
            text(&out.stderr)
        );
        for table in tables(&path) {
            let rows = query_i64(&db, &format!("select count(*) from {table}"));
            assert!(rows > 0, "{name}: table {table} is empty");
        }
    }
    assert_eq!(query_i64(&db, "select count(*) from users"), 300);

    // Leaves were read one month at a time, each window with the owner filter.
    let leaves: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.path == "/api/v3/leaves")
        .collect();
    assert!(leaves.len() > 60, "{} leave requests", leaves.len());
    for r in &leaves {
        assert!(r.query.contains("date=between%2C"), "{}", r.query);
        assert!(
            r.query.contains("leavePeriod.ownerId=greaterthan%2C0"),
            "{}",
            r.query
        );
        assert_eq!(r.status, 200);
    }

    // The README's example query: absences per department, joining the
    // users, departments and leaves tables.
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .unwrap_or_else(|e| panic!("{e}"));
    let sql = readme
        .split("```sql\n-- half days of absence per department")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .unwrap_or_else(|| panic!("the README's BI query is missing"));
    let joined = query_i64(&db, &format!("select count(*) from ({sql})"));
    assert!(joined > 3, "{joined} departments with absences");
    let days = query_i64(
        &db,
        "select count(*) from leaves l join users u on u.id = l.leave_period_owner_id \
         join departments d on d.id = u.department_id",
    );
    assert_eq!(
        days,
        query_i64(&db, "select count(*) from leaves"),
        "every leave has an owner with a department"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_incremental_run_rereads_only_recent_leave_windows() {
    let server = sandbox(SandboxConfig::default()).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (path, db) = local_copy("absences", dir.path());
    let leave_requests = |server: &lucca_sync::sandbox::Sandbox| {
        server
            .requests()
            .iter()
            .filter(|r| r.path == "/api/v3/leaves")
            .count()
    };
    let mut counts = Vec::new();
    for _ in 0..2 {
        let out = lucca_sync(
            &["run", path.to_str().unwrap_or_default()],
            &server.base_url(),
            KEY,
        )
        .await;
        assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
        counts.push(leave_requests(&server));
    }
    // First run: one request per month from 2020-01 to a year ahead; the
    // second re-reads from 3 months back to a year ahead (about 16 windows).
    let (first, second) = (counts[0], counts[1] - counts[0]);
    assert!(first > 80, "{first} requests in the first run");
    assert!(
        (14..=18).contains(&second),
        "{second} requests in the second run"
    );
    let rows = query_i64(&db, "select count(*) from leaves");
    assert!(rows > 0);
    // The state is the day the run read up to.
    let state = query_string(
        &db,
        "select cursor from _lucca_sync_state where stream = 'leaves'",
    );
    assert_eq!(state.len(), 10, "{state}");
    // Merge on id: the re-read windows duplicated nothing.
    assert_eq!(
        query_i64(&db, "select count(distinct id) from leaves"),
        rows
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sliced_append_does_not_append_the_windows_it_reads_again() {
    for parquet in [false, true] {
        let server = sandbox(SandboxConfig::default()).await;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (path, db) = local_copy("absences", dir.path());
        let out_dir = dir.path().join("out").join("parquet");
        let mut yaml = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{e}"))
            .replace("    write_mode: merge\n", "    write_mode: append\n");
        if parquet {
            yaml = yaml.replace(
                &format!("duckdb: {{ path: {} }}", db.display()),
                &format!("parquet: {{ dir: {} }}", out_dir.display()),
            );
        }
        std::fs::write(&path, yaml).unwrap_or_else(|e| panic!("{e}"));
        let count = |sql: &str| {
            if parquet {
                query_parquet_i64(&out_dir.join("leaves"), &sql.replace("{t}", "t"))
            } else {
                query_i64(&db, &sql.replace("{t}", "leaves"))
            }
        };
        let mut rows = Vec::new();
        for _ in 0..2 {
            let out = lucca_sync(
                &["run", path.to_str().unwrap_or_default()],
                &server.base_url(),
                KEY,
            )
            .await;
            assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
            rows.push(count("select count(*) from {t}"));
        }
        // The second run re-read its last windows: the same leaves, not
        // appended again.
        assert!(rows[0] > 0, "parquet={parquet}");
        assert_eq!(rows[1], rows[0], "parquet={parquet}");
        assert_eq!(
            count("select count(distinct id) from {t}"),
            rows[0],
            "parquet={parquet}"
        );
        server.shutdown().await;
    }
}

/// The ready pipelines run nightly against real tenants: none may read an
/// endpoint whose path is a guess (not in Lucca's documentation), which a
/// tenant without that path would answer 404, failing every run.
#[test]
fn shipped_pipelines_read_only_documented_paths() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let guessed: Vec<String> = lucca_sync::catalog::endpoints()
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .filter(|e| {
            e.notes
                .as_deref()
                .is_some_and(|n| n.contains("the path is a guess"))
        })
        .map(|e| e.name.clone())
        .collect();
    assert!(
        guessed.contains(&"expense-natures".to_owned()),
        "{guessed:?}"
    );
    for name in SHIPPED {
        let (path, _) = local_copy(name, dir.path());
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
        for entry in &guessed {
            assert!(
                !text.contains(&format!("endpoint: {entry}\n")),
                "pipelines/{name}.yaml reads `{entry}`, whose path is a guess"
            );
        }
    }
}
