//! A tiny run of the end-to-end benchmark (`benches/e2e.rs`), so that it
//! cannot silently rot: it must complete and report sensible figures.

#[path = "../benches/harness.rs"]
mod harness;

use std::time::Duration;

use harness::{BenchConfig, run_bench, table};

#[tokio::test(flavor = "multi_thread")]
async fn the_benchmark_runs_and_reports_every_scenario() {
    let work = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = BenchConfig {
        records: vec![2_500],
        runs: 1,
        latency: Duration::ZERO,
        binary: env!("CARGO_BIN_EXE_lucca-sync").into(),
        work_dir: work.path().to_path_buf(),
    };
    let rows = run_bench(&config)
        .await
        .unwrap_or_else(|e| panic!("benchmark: {e}"));
    let scenarios: Vec<&str> = rows.iter().map(|r| r.scenario.as_str()).collect();
    assert_eq!(
        scenarios,
        ["run -> duckdb", "run -> parquet", "fetch bound"],
        "{}",
        table(&rows)
    );
    for row in &rows {
        assert!(row.records_per_sec > 0.0, "{row:?}");
        let streams: Vec<&str> = row.requests.iter().map(|s| s.stream.as_str()).collect();
        assert_eq!(streams, ["users", "timeentries"], "{row:?}");
        for stream in &row.requests {
            assert_eq!(stream.min_requests, 3);
            // Keyset paging: ceil(2500 / 1000) pages, plus at most one.
            assert!(stream.requests >= 3 && stream.requests <= 4, "{row:?}");
        }
    }
    assert!(rows[0].peak_rss_mb.unwrap_or_default() > 1.0);
    assert!(table(&rows).contains("| fetch bound | 2500 |"));
}
