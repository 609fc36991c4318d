//! The `lucca-sync` command line: parses arguments, sets up logging, calls
//! the library and maps outcomes to exit codes.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use lucca_sync::pipeline::{self, Pipeline, PipelineErrors};
use lucca_sync::progress;
use lucca_sync::report::{self, PipelineSummary, RunSummary};
use lucca_sync::run::{self, Budgets, RunOptions, RunReport, StreamStatus};
use lucca_sync::sandbox;
use lucca_sync::settings::{LogFormat, Settings};
use lucca_sync::transform::{ColumnInfo, ColumnType};

const EXIT_CODES: &str = "\
Exit codes:
  0    every stream loaded
  1    the run failed (a stream failed, the destination could not be written)
  2    usage or pipeline error (nothing was sent)
  3    the API key was rejected (401): the run stopped at once, nothing of that pipeline
       was written and later pipelines did not run
  4    some streams were refused (403) and skipped, the others loaded
  130  interrupted (SIGINT/SIGTERM): nothing of the pipeline under way was written
       and later pipelines did not run (a pipeline already publishing when the
       signal came completes, and it is not counted as interrupted)";

#[derive(Parser)]
#[command(name = "lucca-sync", version, about = "Copies HR data out of Lucca into DuckDB tables and Parquet files", after_help = EXIT_CODES)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct GlobalArgs {
    /// More log output (-v debug, -vv trace). Overrides LUCCA_SYNC_LOG and `log_level`.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Less log output (-q warnings and errors only, -qq errors only).
    #[arg(short, long, action = clap::ArgAction::Count, global = true, conflicts_with = "verbose")]
    quiet: u8,
    /// Log format on stderr: text when stderr is a terminal, JSON otherwise.
    #[arg(long, value_enum, global = true)]
    log_format: Option<LogFormatArg>,
    /// Settings file (default: ./lucca-sync.toml if present).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Auto,
    Text,
    Json,
}

#[derive(Args)]
struct RunArgs {
    /// Pipeline files.
    #[arg(required = true)]
    pipelines: Vec<PathBuf>,
    /// Ignore the stored incremental state for this run: read everything.
    #[arg(long)]
    full_refresh: bool,
    /// Ask the API only for each stream's count (one request per stream),
    /// print what a run would fetch and how long the request budget makes
    /// it take; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Read at most N records per stream (to try a pipeline); the
    /// incremental state is left as it was.
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
    /// Also write the end-of-run summary as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    summary_json: Option<PathBuf>,
    /// Write Prometheus metrics (rows, requests, retries, 429s, durations,
    /// last success per stream) to FILE, for node-exporter's textfile
    /// collector.
    #[arg(long, value_name = "FILE")]
    metrics_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Sync the pipelines' streams into their destinations.
    Run(RunArgs),
    /// Check pipeline files without touching the network.
    Validate {
        /// Pipeline files.
        #[arg(required = true)]
        pipelines: Vec<PathBuf>,
    },
    /// Send one authenticated request per pipeline and say whether it works.
    Check {
        /// Pipeline files.
        #[arg(required = true)]
        pipelines: Vec<PathBuf>,
    },
    /// Start a local fake Lucca tenant and run the shipped pipelines against it.
    Demo {
        /// Directory of the pipelines to run (default: `pipelines`, else
        /// the Docker image's `/etc/lucca-sync/pipelines`).
        #[arg(long)]
        pipelines: Option<PathBuf>,
        /// Where the demo's outputs go.
        #[arg(long, default_value = "out/demo")]
        out: PathBuf,
    },
    /// Print the columns and types each stream's tables will have.
    Schema {
        /// Pipeline files.
        #[arg(required = true)]
        pipelines: Vec<PathBuf>,
        /// Also read the first N pages of each stream (`--sample`: 1,
        /// `--sample=3`) and show the types and child tables the data
        /// gives; writes nothing.
        #[arg(
            long,
            value_name = "N",
            num_args = 0..=1,
            require_equals = true,
            default_missing_value = "1"
        )]
        sample: Option<u32>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the JSON Schema of the pipeline file format (for editors).
    JsonSchema,
    /// List the built-in catalog of Lucca endpoints, or show one in detail.
    Endpoints {
        /// A catalog name (e.g. `users`): its fields, types, key, cursor and
        /// required filters.
        name: Option<String>,
    },
    /// Serve the fake Lucca tenant on 127.0.0.1 until interrupted.
    Sandbox {
        /// Port (0 picks a free one).
        #[arg(long, default_value_t = 8787)]
        port: u16,
        /// Serve this many synthetic users instead of the fixtures.
        #[arg(long)]
        users: Option<u32>,
        /// The API key the sandbox accepts.
        #[arg(long, default_value = sandbox::DEFAULT_API_KEY)]
        api_key: String,
        /// Keep every page once rendered and serve it again as bytes
        /// (benchmarks: the sandbox then costs almost no CPU).
        #[arg(long)]
        cache_pages: bool,
        /// Serve this many time entries at /api/v3/timeentries instead of
        /// the few derived from the first users.
        #[arg(long)]
        time_entries: Option<u32>,
        /// Delay every response by this many milliseconds, as a tenant far
        /// from the client would (0: none).
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
    },
}

/// Exit codes, as documented in `--help` and the README.
mod exit {
    pub const OK: u8 = 0;
    pub const FAILED: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const KEY_REJECTED: u8 = 3;
    pub const PARTIAL: u8 = 4;
    pub const INTERRUPTED: u8 = 130;
}

/// Output piped into `head` ends the process quietly, as for any Unix
/// tool: Rust ignores SIGPIPE (sockets rely on it), so `println!` panics on
/// a closed pipe; that one panic exits at once with 141 (128 + SIGPIPE),
/// without a message or backtrace. Runs publish before they print.
fn quiet_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

fn main() -> ExitCode {
    quiet_broken_pipe();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    let settings = match Settings::load(cli.global.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let _ = JSON_LOGS.set(init_tracing(&cli.global, &settings));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    let code = runtime.block_on(dispatch(cli.command, settings));
    ExitCode::from(code)
}

/// True when log lines are JSON: then every line on stderr must be JSON,
/// errors included.
static JSON_LOGS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// A run's error: for the log collector, a JSON line with the pipeline,
/// the exit code and, when the error names them, the stream and URL, as
/// fields to query on.
fn report_run_error(pipeline: &str, e: &run::RunError) {
    // Every RunError but a pipeline file's own names the pipeline.
    let message = match e {
        run::RunError::Pipeline(_) => format!("pipeline `{pipeline}`: {e}"),
        _ => e.to_string(),
    };
    if !json_logs() {
        eprintln!("error: {message}");
        return;
    }
    let exit_code = exit_code(e);
    match e.stream_and_url() {
        Some((stream, url)) => {
            tracing::error!(pipeline, stream, url, exit_code, "{message}");
        }
        None => tracing::error!(pipeline, exit_code, "{message}"),
    }
}

/// An error for the person or the log collector: a JSON log line when logs
/// are JSON, else `error: ...` on stderr.
fn report_error(message: &str) {
    if json_logs() {
        tracing::error!("{message}");
    } else {
        eprintln!("error: {message}");
    }
}

fn json_logs() -> bool {
    JSON_LOGS.get().copied().unwrap_or(false)
}

/// Sets up logging; returns whether log lines are JSON.
fn init_tracing(args: &GlobalArgs, settings: &Settings) -> bool {
    let level = match (args.verbose, args.quiet) {
        (0, 0) => std::env::var("LUCCA_SYNC_LOG").unwrap_or_else(|_| settings.log_level.clone()),
        // lucca-sync's own debug lines (one per page), not its HTTP and
        // TLS libraries' (`-vv` shows everything).
        (1, _) => "info,lucca_sync=debug".into(),
        (v, _) if v >= 2 => "trace".into(),
        (_, 1) => "warn".into(),
        _ => "error".into(),
    };
    let filter = EnvFilter::try_new(&level).unwrap_or_else(|_| EnvFilter::new("info"));
    let format = match args.log_format {
        Some(LogFormatArg::Json) => LogFormat::Json,
        Some(LogFormatArg::Text) => LogFormat::Text,
        Some(LogFormatArg::Auto) => LogFormat::Auto,
        None => settings.log_format,
    };
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init();
    } else {
        // Colours only for a terminal: a text log sent to a file stays
        // plain text.
        builder
            .compact()
            .with_ansi(std::io::stderr().is_terminal())
            .init();
    }
    json
}

async fn dispatch(command: Command, settings: Settings) -> u8 {
    match command {
        Command::Validate { pipelines } => validate(&pipelines),
        Command::Endpoints { name } => endpoints(name.as_deref()),
        Command::JsonSchema => {
            let schema = pipeline::json_schema();
            println!(
                "{}",
                serde_json::to_string_pretty(&schema).unwrap_or_default()
            );
            exit::OK
        }
        Command::Run(args) => {
            let loaded = match load_all(&args.pipelines, &|name| std::env::var(name).ok()) {
                Ok(p) => p,
                // The reports say so too: a metrics file left from the last
                // good night would tell the alerting all is well.
                Err(code) if args.dry_run => return code,
                Err(code) => {
                    let now = chrono::Utc::now();
                    let summary = RunSummary {
                        started_at: now,
                        finished_at: now,
                        exit_code: code,
                        pipelines: Vec::new(),
                    };
                    return write_reports(&summary, &args).max(code);
                }
            };
            let options = RunOptions {
                full_refresh: args.full_refresh,
                limit: args.limit,
                // Bars would break the one-JSON-object-per-line stderr.
                progress: if json_logs() {
                    None
                } else {
                    progress::TerminalProgress::start()
                },
            };
            if args.dry_run {
                return dry_run_all(&loaded, &settings, &options).await;
            }
            if let Some(problem) = unwritable_report(&args) {
                report_error(&problem);
                return exit::USAGE;
            }
            let started_at = chrono::Utc::now();
            let (code, pipelines) = run_all(&loaded, &settings, &options).await;
            let summary = RunSummary {
                started_at,
                finished_at: chrono::Utc::now(),
                exit_code: code,
                pipelines,
            };
            write_reports(&summary, &args).max(code)
        }
        Command::Schema {
            pipelines,
            sample,
            json,
        } => {
            let loaded = match load_all(&pipelines, &|name| std::env::var(name).ok()) {
                Ok(p) => p,
                Err(code) => return code,
            };
            for pipeline in &loaded {
                match run::resolve_schema(pipeline, &settings, sample).await {
                    Ok(columns) if json => println!(
                        "{}",
                        serde_json::to_string_pretty(&schema_json(&columns, sample.is_some()))
                            .unwrap_or_default()
                    ),
                    Ok(columns) => print_schema(&pipeline.spec.name, &columns, sample.is_some()),
                    Err(e) => return failed(&e),
                }
            }
            exit::OK
        }
        Command::Check { pipelines } => {
            let loaded = match load_all(&pipelines, &|name| std::env::var(name).ok()) {
                Ok(p) => p,
                Err(code) => return code,
            };
            check_all(&loaded, &settings).await
        }
        Command::Demo { pipelines, out } => {
            match demo(&shipped(pipelines), &out, &settings).await {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    exit::FAILED
                }
            }
        }
        Command::Sandbox {
            port,
            users,
            api_key,
            cache_pages,
            time_entries,
            latency_ms,
        } => match serve_sandbox(
            sandbox::SandboxConfig {
                api_key,
                users: match users {
                    Some(n) => sandbox::UserData::Synthetic(n),
                    None => sandbox::UserData::Fixtures,
                },
                cache_pages,
                time_entries,
                faults: sandbox::Faults {
                    latency: std::time::Duration::from_millis(latency_ms),
                    ..sandbox::Faults::default()
                },
                ..sandbox::SandboxConfig::default()
            },
            port,
        )
        .await
        {
            Ok(()) => exit::OK,
            Err(e) => {
                eprintln!("error: {e:#}");
                exit::FAILED
            }
        },
    }
}

/// `lucca-sync endpoints [NAME]`.
fn endpoints(name: Option<&str>) -> u8 {
    let all = match lucca_sync::catalog::endpoints() {
        Ok(all) => all,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::FAILED;
        }
    };
    let Some(name) = name else {
        print!("{}", lucca_sync::catalog::list_text(all));
        return exit::OK;
    };
    match all.iter().find(|e| e.name == name) {
        Some(entry) => {
            print!("{}", lucca_sync::catalog::detail_text(entry));
            exit::OK
        }
        None => {
            let hint = lucca_sync::catalog::suggest(name)
                .map(|n| format!(": did you mean `{n}`?"))
                .unwrap_or_default();
            eprintln!(
                "error: `{name}` is not a catalog endpoint{hint} (`lucca-sync endpoints` lists them)"
            );
            exit::USAGE
        }
    }
}

fn validate(paths: &[PathBuf]) -> u8 {
    let mut code = exit::OK;
    for path in paths {
        match pipeline::load(path) {
            Ok(p) => println!(
                "{}: ok ({} stream{})",
                path.display(),
                p.streams.len(),
                if p.streams.len() == 1 { "" } else { "s" }
            ),
            Err(errors) => {
                print_errors(&errors, false);
                code = exit::USAGE;
            }
        }
    }
    code
}

/// Pipeline errors, `file:line:col: message` each; as JSON log lines when
/// `as_log` and logs are JSON (`run`), plain for `validate` (a report).
fn print_errors(errors: &PipelineErrors, as_log: bool) {
    for e in &errors.0 {
        if as_log && json_logs() {
            tracing::error!("{e}");
        } else {
            eprintln!("{e}");
        }
    }
}

fn load_all(paths: &[PathBuf], env: &dyn Fn(&str) -> Option<String>) -> Result<Vec<Pipeline>, u8> {
    let mut loaded = Vec::new();
    let mut failed = false;
    for path in paths {
        match pipeline::load_with(path, env) {
            Ok(p) => loaded.push(p),
            Err(errors) => {
                print_errors(&errors, true);
                failed = true;
            }
        }
    }
    if failed { Err(exit::USAGE) } else { Ok(loaded) }
}

/// How a signal reaches the run: `token` is cancelled by a task once tokio
/// has seen the signal; `received` is set inside the signal handler itself,
/// so a check right after a publish cannot miss a signal that came during
/// it (the task may not have run yet).
struct Stop {
    token: CancellationToken,
    received: Arc<AtomicBool>,
}

impl Stop {
    fn came(&self) -> bool {
        self.token.is_cancelled() || self.received.load(Ordering::SeqCst)
    }
}

/// Cancelled on SIGINT or SIGTERM.
fn stop_on_signals() -> Stop {
    let token = CancellationToken::new();
    let received = Arc::new(AtomicBool::new(false));
    #[cfg(unix)]
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        // Cannot fail for these two signals; if it did, `token` still works.
        let _ = signal_hook::flag::register(signal, Arc::clone(&received));
    }
    let cancel = token.clone();
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        cancel.cancel();
        tracing::warn!(
            "signal received: stopping; a pipeline not yet publishing will not be published"
        );
    });
    Stop { token, received }
}

/// Runs the pipelines one after the other; stops at the first that fails
/// as a whole. Returns the exit code and what each pipeline did.
async fn run_all(
    pipelines: &[Pipeline],
    settings: &Settings,
    options: &RunOptions,
) -> (u8, Vec<PipelineSummary>) {
    let budgets = Budgets::for_run(pipelines);
    let stop = stop_on_signals();
    let mut code = exit::OK;
    let mut summaries = Vec::new();
    for (index, pipeline) in pipelines.iter().enumerate() {
        match run::run_pipeline(pipeline, settings, &budgets, &stop.token, options).await {
            Ok(report) => {
                if let Some(progress) = &options.progress {
                    progress.finish();
                }
                print_summary(&report, Published::Yes);
                summaries.push(PipelineSummary::completed(&report));
                code = code.max(report_code(&report));
            }
            Err(e) => {
                if let Some(progress) = &options.progress {
                    progress.finish();
                }
                if let Some(partial) = e.partial_report() {
                    // What was sent before the stop, published or not.
                    print_summary(partial, Published::No);
                }
                report_run_error(&pipeline.spec.name, &e);
                summaries.push(stopped_summary(pipeline, &e));
                return (exit_code(&e), summaries);
            }
        }
        if stop.came() {
            // The signal came while this pipeline was publishing: it is
            // published, so its own code stands; the next ones do not run.
            tracing::warn!(
                pipeline = %pipeline.spec.name,
                "the signal came while the pipeline was publishing: it is published"
            );
            if index + 1 < pipelines.len() {
                return (exit::INTERRUPTED, summaries);
            }
        }
    }
    (code, summaries)
}

/// The summary of a pipeline stopped as a whole by `e`: its streams as they
/// stood when they had run, else by name with nothing done.
fn stopped_summary(pipeline: &Pipeline, e: &run::RunError) -> PipelineSummary {
    if let Some(partial) = e.partial_report() {
        return PipelineSummary::unpublished(partial, e.to_string());
    }
    let streams: Vec<String> = pipeline
        .streams
        .iter()
        .map(|s| s.spec.name.clone())
        .collect();
    let status = match e {
        run::RunError::Interrupted { .. } => "stopped",
        _ => "failed",
    };
    PipelineSummary::failed(&pipeline.spec.name, &streams, status, e.to_string())
}

/// Why `--summary-json` or `--metrics-file` cannot be written, if its
/// directory is missing: found out before the sync, not after it published.
fn unwritable_report(args: &RunArgs) -> Option<String> {
    [&args.summary_json, &args.metrics_file]
        .into_iter()
        .flatten()
        .find_map(|path| {
            let dir = match path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir,
                _ => Path::new("."),
            };
            (!dir.is_dir()).then(|| {
                format!(
                    "cannot write {}: the directory {} does not exist",
                    path.display(),
                    dir.display()
                )
            })
        })
}

/// Writes `--summary-json` and `--metrics-file`; a file that cannot be
/// written makes the run fail (exit 1) without hiding a worse code.
fn write_reports(summary: &RunSummary, args: &RunArgs) -> u8 {
    let mut code = exit::OK;
    if let Some(path) = &args.summary_json {
        let json = serde_json::to_vec_pretty(summary).unwrap_or_default();
        if let Err(e) = report::write_atomically(path, &json) {
            report_error(&format!(
                "cannot write the summary to {}: {e}",
                path.display()
            ));
            code = exit::FAILED;
        }
    }
    if let Some(path) = &args.metrics_file {
        let previous = std::fs::read_to_string(path).ok();
        let text = report::prometheus_text(summary, previous.as_deref());
        if let Err(e) = report::write_atomically(path, text.as_bytes()) {
            report_error(&format!(
                "cannot write the metrics to {}: {e}",
                path.display()
            ));
            code = exit::FAILED;
        }
    }
    code
}

/// `run --dry-run`: what each pipeline would fetch; nothing is written.
/// Reports a command's error; its exit code.
fn failed(e: &run::RunError) -> u8 {
    report_error(&e.to_string());
    exit_code(e)
}

/// The exit code of a command that stopped on `e`, the same for `run`,
/// `check`, `schema` and dry runs.
fn exit_code(e: &run::RunError) -> u8 {
    match e {
        run::RunError::KeyRejected { .. } => exit::KEY_REJECTED,
        run::RunError::Interrupted { .. } => exit::INTERRUPTED,
        run::RunError::Pipeline(_) => exit::USAGE,
        // As `run` says of a stream refused.
        e if e.is_forbidden() => exit::PARTIAL,
        _ => exit::FAILED,
    }
}

async fn dry_run_all(pipelines: &[Pipeline], settings: &Settings, options: &RunOptions) -> u8 {
    let mut code = exit::OK;
    for pipeline in pipelines {
        let plan = match run::plan_pipeline(pipeline, settings, options).await {
            Ok(plan) => plan,
            Err(e) => return failed(&e),
        };
        println!(
            "pipeline {} (dry run: nothing is written)\n{:<24} {:>10} {:>10} {:>9}  endpoint",
            plan.pipeline, "stream", "records", "page size", "requests"
        );
        for s in &plan.streams {
            let unknown = || "?".to_owned();
            println!(
                "{:<24} {:>10} {:>10} {:>9}  {}",
                s.stream,
                s.records.map_or_else(unknown, |n| n.to_string()),
                s.page_size,
                s.requests.map_or_else(unknown, |n| n.to_string()),
                s.endpoint
            );
        }
        // The exit code a run would have: 4 when it would skip refused
        // streams, 1 when a stream would fail.
        for s in &plan.streams {
            if let Some(problem) = &s.problem {
                report_error(&problem.message);
                code = code.max(if problem.forbidden {
                    exit::PARTIAL
                } else {
                    exit::FAILED
                });
            }
        }
        match (plan.rate_limit_per_minute, plan.budget_secs) {
            (Some(rate), Some(secs)) => println!(
                "at {rate} requests per minute, the request budget alone makes the run take {}",
                human_duration(secs)
            ),
            (Some(rate), None) => println!(
                "at {rate} requests per minute (an endpoint gives no count: the duration is unknown)"
            ),
            (None, _) => println!("request budget: unlimited"),
        }
        match run::resolve_schema(pipeline, settings, None).await {
            Ok(columns) => print_schema(&plan.pipeline, &columns, false),
            Err(e) => return failed(&e),
        }
    }
    code
}

/// The DuckDB type of a column, or why it is not known yet.
fn shown_type(ty: Option<ColumnType>, sampled: bool) -> String {
    match ty {
        Some(ColumnType::Json) => "VARCHAR (JSON)".to_owned(),
        Some(ty) => lucca_sync::load::duckdb::sql_type(&ty.arrow_type()),
        None if sampled => "VARCHAR (no value in the sample)".to_owned(),
        None => "inferred at run time".to_owned(),
    }
}

/// `schema` and `run --dry-run`: each table's columns.
fn print_schema(pipeline: &str, columns: &[ColumnInfo], sampled: bool) {
    let mut table = "";
    for c in columns {
        if c.table != table {
            table = &c.table;
            println!(
                "pipeline {pipeline}, table {table}\n  {:<32} {:<24} field",
                "column", "type"
            );
        }
        let pii = if c.pii.is_some() { "  (pii: hash)" } else { "" };
        let field = if c.field.is_empty() {
            "(parent key / position)"
        } else {
            &c.field
        };
        println!(
            "  {:<32} {:<24} {field}{pii}",
            c.column,
            shown_type(c.column_type, sampled)
        );
    }
}

fn schema_json(columns: &[ColumnInfo], sampled: bool) -> serde_json::Value {
    serde_json::Value::Array(
        columns
            .iter()
            .map(|c| {
                let mut v = serde_json::to_value(c).unwrap_or_default();
                v["type"] = serde_json::Value::from(shown_type(c.column_type, sampled));
                v
            })
            .collect(),
    )
}

/// `95` -> `1 min 35 s`.
fn human_duration(secs: f64) -> String {
    let total = secs.round() as u64;
    match (total / 3600, (total % 3600) / 60, total % 60) {
        (0, 0, s) => format!("{s} s"),
        (0, m, s) => format!("{m} min {s} s"),
        (h, m, _) => format!("{h} h {m} min"),
    }
}

fn report_code(report: &RunReport) -> u8 {
    let mut code = exit::OK;
    for s in &report.streams {
        code = code.max(match s.status {
            StreamStatus::Loaded => exit::OK,
            StreamStatus::Forbidden(_) => exit::PARTIAL,
            StreamStatus::Failed(_) | StreamStatus::Stopped => exit::FAILED,
        });
    }
    // A failure outranks a refusal.
    if report
        .streams
        .iter()
        .any(|s| matches!(s.status, StreamStatus::Failed(_) | StreamStatus::Stopped))
    {
        exit::FAILED
    } else {
        code
    }
}

/// Whether a summary's run published: one that did not (a rejected key,
/// a signal) says why once, in its error line, not once per stream.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Published {
    Yes,
    No,
}

fn print_summary(report: &RunReport, published: Published) {
    println!(
        "pipeline {} (run {})\n{:<24} {:>10} {:>10} {:>9} {:>8} {:>9}  status",
        report.pipeline,
        report.run_id,
        "stream",
        "rows",
        "api count",
        "requests",
        "retries",
        "time"
    );
    for s in &report.streams {
        let status = match &s.status {
            StreamStatus::Forbidden(e) | StreamStatus::Failed(e) if published == Published::Yes => {
                e.clone()
            }
            other => other.name_and_error().0.to_owned(),
        };
        println!(
            "{:<24} {:>10} {:>10} {:>9} {:>8} {:>8.1}s  {}",
            s.stream,
            s.rows,
            s.api_count.map_or("-".into(), |c| c.to_string()),
            s.requests,
            s.retries,
            s.elapsed.as_secs_f64(),
            status
        );
        // For log collectors: with text logs on a terminal, the table
        // above says it already.
        if json_logs() {
            let (status_name, error) = s.status.name_and_error();
            tracing::info!(
                pipeline = %report.pipeline,
                run_id = %report.run_id,
                stream = %s.stream,
                rows = s.rows,
                api_count = s.api_count,
                requests = s.requests,
                retries = s.retries,
                throttled = s.throttled,
                elapsed_ms = s.elapsed.as_millis() as u64,
                status = status_name,
                error,
                "stream summary"
            );
        }
        // A stream that did not load is said at its level too, so that
        // `-q` and log filters on WARN/ERROR show why the run failed.
        match &s.status {
            _ if published == Published::No => {}
            StreamStatus::Loaded => {}
            StreamStatus::Forbidden(e) | StreamStatus::Failed(e) => {
                tracing::error!(pipeline = %report.pipeline, stream = %s.stream, "{e}");
            }
            StreamStatus::Stopped => {
                tracing::warn!(
                    pipeline = %report.pipeline,
                    stream = %s.stream,
                    "stopped before the end: nothing of it was published"
                );
            }
        }
        for (table, rows) in &s.child_tables {
            println!("{:<24} {:>10}", format!("  {table}"), rows);
        }
        for change in &s.schema_changes {
            println!(
                "  new field `{}`: {} as column {}.{}",
                change.field, change.action, change.table, change.column
            );
        }
    }
}

async fn check_all(pipelines: &[Pipeline], settings: &Settings) -> u8 {
    let mut code = exit::OK;
    for pipeline in pipelines {
        match run::check_pipeline(pipeline, settings).await {
            Ok(message) => println!("{}: OK: {message}", pipeline.path.display()),
            Err(e) => {
                println!("{}: FAILED: {e}", pipeline.path.display());
                code = code.max(exit_code(&e));
            }
        }
    }
    code
}

async fn serve_sandbox(config: sandbox::SandboxConfig, port: u16) -> anyhow::Result<()> {
    let server = sandbox::Sandbox::start_on(config, ([127, 0, 0, 1], port).into())
        .await
        .context("cannot start the sandbox")?;
    println!("sandbox listening on {}", server.base_url());
    let _ = tokio::signal::ctrl_c().await;
    server.shutdown().await;
    Ok(())
}

/// The shipped pipelines: `dir` if given, else `./pipelines` (a checkout),
/// else where the Docker image keeps them.
fn shipped(dir: Option<PathBuf>) -> PathBuf {
    let image = Path::new("/etc/lucca-sync/pipelines");
    dir.unwrap_or_else(|| {
        if Path::new("pipelines").is_dir() || !image.is_dir() {
            PathBuf::from("pipelines")
        } else {
            image.to_path_buf()
        }
    })
}

async fn demo(dir: &Path, out: &Path, settings: &Settings) -> anyhow::Result<u8> {
    let server = sandbox::Sandbox::start(sandbox::SandboxConfig::default())
        .await
        .context("cannot start the sandbox")?;
    let base_url = server.base_url();
    println!("sandbox (a fake Lucca tenant) listening on {base_url}");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the pipelines directory {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    paths.sort();
    let env = |name: &str| match name {
        "LUCCA_BASE_URL" => Some(base_url.clone()),
        "LUCCA_API_KEY" => Some(sandbox::DEFAULT_API_KEY.to_owned()),
        other => std::env::var(other).ok(),
    };
    let mut pipelines = match load_all(&paths, &env) {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    for p in &mut pipelines {
        run::redirect_destination(&mut p.spec.destination, out);
        // The sandbox is local: no request budget to keep to.
        p.spec.source.rate_limit_per_minute = pipeline::RateLimit::Unlimited;
    }
    let (code, _) = run_all(&pipelines, settings, &RunOptions::default()).await;
    server.shutdown().await;
    if code == exit::OK {
        println!("\nThe demo's outputs are in {}. Try:", out.display());
        for p in &pipelines {
            if let pipeline::DestinationSpec::Duckdb(d) = &p.spec.destination {
                println!(
                    "  duckdb {} \"select department_name, count(*) from users group by 1 order by 2 desc\"",
                    d.path.display()
                );
                break;
            }
        }
    }
    Ok(code)
}
