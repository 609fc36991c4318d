//! A tiny run of the end-to-end benchmark (`benches/e2e.rs`), so that it
//! cannot silently rot: it must complete and report sensible figures.

#[path = "../benches/harness.rs"]
mod harness;

use std::time::Duration;

use harness::{
    BenchConfig, BenchRow, DUCKDB_ALONE, FETCH_BOUND, StreamRequests, run_bench, table, targets,
};

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
        ["run -> duckdb", "run -> parquet", DUCKDB_ALONE, FETCH_BOUND],
        "{}",
        table(&rows)
    );
    // The DuckDB loader on its own, and the minimal client, report their
    // CPU time; only runs are compared with the bound.
    assert!(rows[2].cpu_secs.unwrap_or_default() > 0.0, "{:?}", rows[2]);
    assert_eq!(rows[2].ratio_to_fetch_bound, None, "{:?}", rows[2]);
    assert!(rows[3].cpu_secs.unwrap_or_default() > 0.0, "{:?}", rows[3]);
    assert!(
        rows[3].fetch_cpu_floor.unwrap_or_default() > 0.0,
        "{:?}",
        rows[3]
    );
    for row in rows.iter().filter(|r| r.scenario != DUCKDB_ALONE) {
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
    // Every run is judged (speed is reported, never asserted here).
    let checks = targets(&rows);
    let judged = |prefix: &str| {
        checks
            .iter()
            .filter(|c| c.target.starts_with(prefix))
            .count()
    };
    assert_eq!(judged(">= 60% of the fetch bound"), 2, "{checks:?}");
    assert_eq!(judged("requests <="), 2, "{checks:?}");
    assert!(
        checks
            .iter()
            .filter(|c| c.target.starts_with("requests <="))
            .all(|c| c.met),
        "{checks:?}"
    );
}

fn row(scenario: &str, records: u32, latency_ms: u64, seconds: f64, rss: f64) -> BenchRow {
    let min_requests = u64::from(records).div_ceil(1000);
    let stream = |name: &str, extra: u64| StreamRequests {
        stream: name.into(),
        requests: min_requests + extra,
        min_requests,
    };
    BenchRow {
        scenario: scenario.into(),
        records,
        latency_ms,
        seconds,
        records_per_sec: 0.0,
        ratio_to_fetch_bound: Some(0.5),
        peak_rss_mb: Some(rss),
        cpu_secs: Some(1.0),
        fetch_cpu_floor: None,
        requests: vec![stream("users", 0), stream("timeentries", 2)],
        sandbox_cpu_share: 0.01,
    }
}

/// The (measured, met) of the checks whose target starts with `prefix`.
fn judged<'a>(checks: &'a [(String, String, bool)], prefix: &str) -> Vec<(&'a str, bool)> {
    checks
        .iter()
        .filter(|(target, _, _)| target.starts_with(prefix))
        .map(|(_, measured, met)| (measured.as_str(), *met))
        .collect()
}

#[test]
fn the_targets_are_judged_as_the_issue_states_them() {
    let verdicts = |rows: &[BenchRow]| -> Vec<(String, String, bool)> {
        targets(rows)
            .into_iter()
            .map(|c| (c.target, c.measured, c.met))
            .collect()
    };
    let latency = verdicts(&[
        row("run -> parquet", 100_000, 50, 5.30, 40.0),
        row("run -> duckdb", 100_000, 50, 5.70, 80.0),
    ]);
    let within = judged(&latency, "within 10%");
    assert_eq!(within.len(), 2, "{latency:?}");
    // The longest stream's requests count: 102 x 50 ms = 5.1 s.
    assert!(
        within[0].1 && within[0].0.contains("102 x 50 ms = 5.10 s: +3.9%"),
        "{latency:?}"
    );
    assert!(
        !within[1].1 && within[1].0.ends_with(": +11.8%"),
        "{latency:?}"
    );
    // Two extra requests on a stream: missed.
    assert!(
        judged(&latency, "requests <=")
            .iter()
            .all(|(measured, met)| !met && measured.contains("timeentries 102 (min 100)")),
        "{latency:?}"
    );
    // Zero latency: half the fetch bound misses 60%; RSS from 100k to 1M.
    let zero = verdicts(&[
        row("run -> parquet", 100_000, 0, 0.2, 50.0),
        row("run -> parquet", 1_000_000, 0, 1.7, 62.0),
        row("run -> duckdb", 100_000, 0, 0.5, 90.0),
        row("run -> duckdb", 1_000_000, 0, 3.6, 120.0),
    ]);
    let fetch = judged(&zero, ">= 60%");
    assert_eq!(fetch.len(), 4);
    assert!(
        fetch
            .iter()
            .all(|(measured, met)| !met && *measured == "50%")
    );
    assert_eq!(
        judged(&zero, "peak RSS"),
        [
            ("50.0 -> 62.0 MB (1.24x)", true),
            ("90.0 -> 120.0 MB (1.33x)", false)
        ]
    );
    // In the harness's own order (by N, then destination): still one RSS
    // check per destination.
    let interleaved = verdicts(&[
        row("run -> duckdb", 100_000, 0, 0.5, 90.0),
        row("run -> parquet", 100_000, 0, 0.2, 50.0),
        row("run -> duckdb", 1_000_000, 0, 3.6, 120.0),
        row("run -> parquet", 1_000_000, 0, 1.7, 62.0),
    ]);
    let rss: Vec<&str> = judged(&interleaved, "peak RSS")
        .into_iter()
        .map(|(measured, _)| measured)
        .collect();
    assert_eq!(rss, ["90.0 -> 120.0 MB (1.33x)", "50.0 -> 62.0 MB (1.24x)"]);
}

#[test]
fn a_missed_share_of_the_fetch_bound_says_when_it_is_out_of_reach() {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    // The bound took 0.6 s: 60% of it allows 1.0 s, `cores` CPU seconds.
    let mut bound = row(FETCH_BOUND, 100_000, 0, 0.6, 0.0);
    bound.fetch_cpu_floor = Some(0.62);
    let mut alone = row(DUCKDB_ALONE, 100_000, 0, 1.0, 0.0);
    alone.cpu_secs = Some(cores as f64 + 0.5);
    let mut duckdb = row("run -> duckdb", 100_000, 0, 2.0, 90.0);
    duckdb.ratio_to_fetch_bound = Some(0.3);
    let mut parquet = row("run -> parquet", 100_000, 0, 1.2, 50.0);
    parquet.ratio_to_fetch_bound = Some(0.5);
    let checks = targets(&[duckdb, parquet, alone, bound]);
    let fetch: Vec<(&str, bool)> = checks
        .iter()
        .filter(|c| c.target.starts_with(">= 60%"))
        .map(|c| (c.measured.as_str(), c.met))
        .collect();
    let needed = cores as f64 + 0.5 + 0.62;
    assert_eq!(
        fetch,
        [
            (
                format!(
                    "30%; out of reach on {cores} cores: the DuckDB loader alone takes \
                     {:.2} CPU s, fetching them takes 0.62 CPU s (client + sandbox), \
                     {needed:.2} in all > {cores} x 1.00 s",
                    cores as f64 + 0.5
                )
                .as_str(),
                false
            ),
            // Fetching alone fits in the cores' time: within reach.
            ("50%", false),
        ]
    );
    // Only runs are judged, not the scenarios they are compared with.
    assert_eq!(
        checks.iter().filter(|c| c.case.contains("alone")).count(),
        0
    );
}
