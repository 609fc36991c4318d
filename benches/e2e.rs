//! End-to-end benchmark: `cargo bench --bench e2e -- --help`. Serves N
//! synthetic users from the sandbox on loopback and measures the fetch
//! bound, `lucca-sync run` into DuckDB and into Parquet, peak RSS, requests
//! and the sandbox's CPU share; prints a Markdown table and which of the
//! issue's targets the figures meet, optionally as JSON (`rows`,
//! `targets`).

mod harness;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use harness::{BenchConfig, run_bench, table, target_list, targets};

/// End-to-end benchmark of lucca-sync against the sandbox.
#[derive(Parser)]
struct Args {
    /// Record counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
    records: Vec<u32>,
    /// Runs per measurement; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Latency the sandbox adds to every answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// `cargo bench` passes `--bench`; accepted and ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let work_dir = std::env::temp_dir().join(format!("lucca-sync-bench-{}", std::process::id()));
    let config = BenchConfig {
        records: args.records,
        runs: args.runs.max(1),
        latency: Duration::from_millis(args.latency_ms),
        binary: PathBuf::from(env!("CARGO_BIN_EXE_lucca-sync")),
        work_dir: work_dir.clone(),
    };
    eprintln!(
        "benchmarking {} ({} run(s) each, latency {} ms)",
        config.binary.display(),
        config.runs,
        args.latency_ms
    );
    let result = run_bench(&config).await;
    let _ = std::fs::remove_dir_all(&work_dir);
    match result {
        Ok(rows) => {
            let checks = targets(&rows);
            print!("{}\nTargets:\n\n{}", table(&rows), target_list(&checks));
            if let Some(path) = args.json {
                let json = serde_json::to_string_pretty(
                    &serde_json::json!({ "rows": rows, "targets": checks }),
                )
                .unwrap_or_default();
                if let Err(e) = std::fs::write(&path, json) {
                    eprintln!("{}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            ExitCode::FAILURE
        }
    }
}
