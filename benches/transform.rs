//! The transform alone: `cargo bench --bench transform -- --records 1000000`.
//! Fetches a few real pages of synthetic users from an in-process sandbox
//! once, then feeds them to the transform again and again (no network, no
//! loader) until N records went through, and prints records/s: the split of
//! each page into records (the extractor's envelope parse) and the JSON ->
//! Arrow transform, separately and together, as the median of several runs.

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use lucca_sync::extract::Page;
use lucca_sync::extract::paging::parse_envelope;
use lucca_sync::json::RecordTape;
use lucca_sync::pipeline::{PagingStyle, parse_fields};
use lucca_sync::sandbox::{Sandbox, SandboxConfig, UserData};
use lucca_sync::transform::StreamTransform;

/// The fields of the end-to-end benchmark's pipeline.
const FIELDS: [&str; 13] = [
    "id",
    "firstName",
    "lastName",
    "mail",
    "login",
    "employeeNumber",
    "birthDate",
    "dtContractStart",
    "dtContractEnd",
    "modifiedAt",
    "department[id,name]",
    "manager[id,name]",
    "legalEntityId",
];

/// Transform throughput on synthetic users.
#[derive(Parser)]
struct Args {
    /// Records to transform per run.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Distinct pages fetched once and cycled through.
    #[arg(long, default_value_t = 20)]
    pages: u32,
    /// Runs; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// `cargo bench` passes `--bench`; accepted and ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

async fn fetch_pages(count: u32) -> Result<Vec<String>, String> {
    let server = Sandbox::start(
        SandboxConfig::new("bench-key").with_users(UserData::Synthetic(count * 1000)),
    )
    .await
    .map_err(|e| e.to_string())?;
    let client = reqwest::Client::new();
    let mut pages = Vec::new();
    for i in 0..count {
        let url = format!(
            "{}/api/v3/users?formerEmployees=true&fields={}&paging={},1000",
            server.base_url(),
            FIELDS.join(","),
            i * 1000
        );
        let body = client
            .get(&url)
            .header("Authorization", "lucca application=bench-key")
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| e.to_string())?
            .text()
            .await
            .map_err(|e| e.to_string())?;
        pages.push(body);
    }
    server.shutdown().await;
    Ok(pages)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or_default()
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let bodies = match fetch_pages(args.pages.max(1)).await {
        Ok(b) => b,
        Err(e) => {
            eprintln!("cannot fetch pages from the sandbox: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Ok(fields) = parse_fields(&FIELDS) else {
        eprintln!("bad field list");
        return ExitCode::FAILURE;
    };
    let per_page = 1000u64;
    let rounds = args.records.div_ceil(per_page);
    let (mut split, mut transform, mut both) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.runs.max(1) {
        // The extractor's part: find the records in each body, as many
        // bodies as the transform reads below (one tape, reused).
        let started = Instant::now();
        let mut tape = RecordTape::default();
        for round in 0..rounds {
            let body = &bodies[round as usize % bodies.len()];
            match parse_envelope(body, PagingStyle::V3, tape) {
                Ok(parsed) => tape = parsed.records,
                Err(e) => {
                    eprintln!("page {round}: {e:?}");
                    return ExitCode::FAILURE;
                }
            }
        }
        let split_secs = started.elapsed().as_secs_f64();
        let mut pages = Vec::new();
        for (i, body) in bodies.iter().enumerate() {
            match parse_envelope(body, PagingStyle::V3, RecordTape::default()) {
                Ok(parsed) => pages.push(Page::new(
                    i as u64 + 1,
                    String::new(),
                    body.clone(),
                    parsed.records,
                )),
                Err(e) => {
                    eprintln!("page {i}: {e:?}");
                    return ExitCode::FAILURE;
                }
            }
        }

        // The transform: pages -> Arrow batches.
        let started = Instant::now();
        let mut t = StreamTransform::new("users", &fields);
        let mut rows = 0usize;
        for round in 0..rounds {
            let page = &pages[round as usize % pages.len()];
            match t.push_page(page) {
                Ok(batches) => rows += batches.iter().map(|b| b.batch.num_rows()).sum::<usize>(),
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        match t.finish() {
            Ok(batches) => rows += batches.iter().map(|b| b.batch.num_rows()).sum::<usize>(),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        }
        let transform_secs = started.elapsed().as_secs_f64();
        if rows as u64 != rounds * per_page {
            eprintln!("expected {} rows, got {rows}", rounds * per_page);
            return ExitCode::FAILURE;
        }
        let records = (rounds * per_page) as f64;
        split.push(records / split_secs);
        transform.push(records / transform_secs);
        both.push(records / (split_secs + transform_secs));
    }
    let records = rounds * per_page;
    println!(
        "| stage | records | records/s (median of {}) |",
        args.runs.max(1)
    );
    println!("|---|---:|---:|");
    println!(
        "| split pages into records (extract) | {records} | {:.0} |",
        median(split)
    );
    println!(
        "| JSON -> Arrow (transform) | {records} | {:.0} |",
        median(transform)
    );
    println!("| both | {records} | {:.0} |", median(both));
    ExitCode::SUCCESS
}
