//! The outputs open in the readers analysts use: the DuckDB file in DuckDB
//! 1.0 (the oldest release its storage format targets) and today's DuckDB;
//! the Parquet directories, partitioned or not, in DuckDB, pyarrow and
//! polars. The readers are Python packages from PyPI that
//! `scripts/install-readers` puts in venvs (CI runs it, and sets
//! LUCCA_SYNC_REQUIRE_READERS=1 so a missing reader fails instead of
//! skipping).

mod common;

use std::path::Path;

use lucca_sync::sandbox::{SandboxConfig, UserData};

use common::*;

async fn run(pipeline: &Path, base_url: &str) {
    let out = lucca_sync(
        &["run", pipeline.to_str().unwrap_or_default()],
        base_url,
        KEY,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_duckdb_file_opens_in_duckdb_1_0_and_today() {
    let (Some(old), Some(current)) = (reader("duckdb-1.0"), reader("current")) else {
        return;
    };
    let server = sandbox(SandboxConfig::default()).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (destination, db) = duckdb_destination(dir.path());
    // Incremental: the file holds lucca-sync's state table too.
    let pipeline = users_pipeline(
        dir.path(),
        &destination,
        "    write_mode: merge\n    incremental: { cursor_field: modifiedAt }\n",
    );
    // Two runs: the second rewrites a file the first created.
    run(&pipeline, &server.base_url()).await;
    run(&pipeline, &server.base_url()).await;
    let script = "import duckdb, sys\n\
        c = duckdb.connect(sys.argv[1], read_only=True)\n\
        users = c.execute('select count(*), count(distinct department_name) from users').fetchall()[0]\n\
        runs = c.execute('select count(*) from lucca_sync_latest_runs').fetchall()[0][0]\n\
        state = c.execute('select count(*) from _lucca_sync_state').fetchall()[0][0]\n\
        kind = c.execute(\"select data_type from information_schema.columns where table_name = 'users' and column_name = 'birth_date'\").fetchall()[0][0]\n\
        print(duckdb.__version__, users[0], users[1] > 1, runs, kind, state)";
    let expected_rows = query_i64(&db, "select count(*) from users");
    let birth_date = query_string(
        &db,
        "select data_type from information_schema.columns where table_name = 'users' and column_name = 'birth_date'",
    );
    for (python_bin, version) in [(&old, "1.0.0"), (&current, "2.")] {
        let answer = python(python_bin, script, &[&db]);
        let fields: Vec<&str> = answer.split(' ').collect();
        assert!(fields[0].starts_with(version), "{answer}");
        assert_eq!(
            fields[1..],
            [
                expected_rows.to_string().as_str(),
                "True",
                "1",
                birth_date.as_str(),
                "1"
            ],
            "{answer}"
        );
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn parquet_directories_read_in_duckdb_pyarrow_and_polars() {
    let Some(current) = reader("current") else {
        return;
    };
    let server = sandbox(SandboxConfig {
        users: UserData::Synthetic(3_000),
        ..SandboxConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (destination, out) = parquet_destination(dir.path());
    let text_pipeline = format!(
        "version: 1\nname: t\nsource:\n  base_url: ${{LUCCA_BASE_URL}}\n  api_key: ${{LUCCA_API_KEY}}\n  rate_limit_per_minute: unlimited\nstreams:\n  - name: users\n    endpoint: /api/v3/users\n    params: {{ formerEmployees: \"true\" }}\n    fields: [id, lastName, birthDate, modifiedAt, legalEntityId]\n    primary_key: id\n  - name: by_entity\n    endpoint: /api/v3/users\n    params: {{ formerEmployees: \"true\" }}\n    fields: [id, lastName, legalEntityId]\n    primary_key: id\n    write_mode: merge\n    partition_by: [legal_entity_id]\ndestination:\n{destination}\n"
    );
    let pipeline = dir.path().join("p.yaml");
    std::fs::write(&pipeline, text_pipeline).unwrap_or_else(|e| panic!("{e}"));
    run(&pipeline, &server.base_url()).await;
    run(&pipeline, &server.base_url()).await;
    let script = "import sys, duckdb, pyarrow.dataset as ds, polars as pl\n\
        users, by_entity, runs = sys.argv[1:4]\n\
        a = duckdb.sql(f\"select count(*) from read_parquet('{users}/*.parquet')\").fetchall()[0][0]\n\
        b = duckdb.sql(f\"select count(distinct id), count(distinct legal_entity_id) from read_parquet('{by_entity}/**/*.parquet', hive_partitioning=true)\").fetchall()[0]\n\
        c = ds.dataset(users).count_rows()\n\
        d = ds.dataset(by_entity, partitioning='hive').to_table(columns=['id', 'legal_entity_id']).num_rows\n\
        e = pl.scan_parquet(users + '/*.parquet').select(pl.len()).collect().item()\n\
        f = pl.scan_parquet(by_entity + '/**/*.parquet', hive_partitioning=True).select(pl.col('legal_entity_id').n_unique()).collect().item()\n\
        g = duckdb.sql(f\"select count(*) from read_parquet('{runs}/*.parquet', union_by_name=true)\").fetchall()[0][0]\n\
        print(a, b[0], b[1] > 1, c, d, e, f > 1, g)";
    let answer = python(
        &current,
        script,
        &[
            &out.join("users"),
            &out.join("by_entity"),
            &out.join("_runs"),
        ],
    );
    assert_eq!(answer, "3000 3000 True 3000 3000 3000 True 4", "{answer}");
    server.shutdown().await;
}
