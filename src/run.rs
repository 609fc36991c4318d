//! A run: wires the stages of every stream of a pipeline together through
//! bounded channels (extract -> transform -> load), then publishes the
//! destination, or leaves it untouched when the key is rejected or the run
//! is interrupted.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::extract::{
    ExtractError, ExtractSummary, Extractor, KeyRejection, Page, RequestBudget, StreamCounters,
    StreamPlan, build_client,
};
use crate::load::{Load, LoadError, LoadOptions, RunRecord, StreamCommit, VersionKey};
use crate::pipeline::naming::stream_column;
use crate::pipeline::{
    Pipeline, PipelineError, RateLimit, ResolvedStream, Window, WriteMode, fields_query,
};
use crate::settings::Settings;
use crate::transform::{
    ColumnInfo, ColumnPolicies, SchemaChange, StreamTransform, TableBatch, TransformError,
};

/// Pages buffered between a stream's extractor and its transform.
const PAGE_CHANNEL: usize = 4;
/// Batches (of `DEFAULT_WARMUP_ROWS` rows, a few MB each) buffered between
/// the transforms and the loader: enough to keep both busy, few enough to
/// keep memory flat.
const BATCH_CHANNEL: usize = 2;

/// Request budgets of the tenants of a run, one per host, shared by all the
/// streams (and pipelines) of the run that talk to that host.
#[derive(Default)]
pub struct Budgets {
    by_host: std::sync::Mutex<HashMap<String, Arc<RequestBudget>>>,
}

impl Budgets {
    /// The budgets of a run of `pipelines`: one per host, at the strictest
    /// `rate_limit_per_minute` any of them sets for that host (unlimited
    /// only when every one of them says so), whichever runs first. The
    /// limit is the tenant's: a pipeline allowed more must not spend what
    /// another one's setting keeps back.
    pub fn for_run(pipelines: &[Pipeline]) -> Budgets {
        let mut limits: Vec<(String, Vec<(&str, RateLimit)>)> = Vec::new();
        for pipeline in pipelines {
            // A pipeline without a valid URL fails on its own when it runs.
            let Ok(url) = pipeline.base_url() else {
                continue;
            };
            let key = host_key(&url);
            let entry = (
                pipeline.spec.name.as_str(),
                pipeline.spec.source.rate_limit_per_minute,
            );
            match limits.iter_mut().find(|(host, _)| *host == key) {
                Some((_, set)) => set.push(entry),
                None => limits.push((key, vec![entry])),
            }
        }
        let mut by_host = HashMap::new();
        for (host, set) in limits {
            let strictest = strictest(set.iter().map(|(_, limit)| *limit));
            if set.iter().any(|(_, limit)| *limit != strictest) {
                let each: Vec<String> = set
                    .iter()
                    .map(|(name, limit)| format!("{name}: {}", limit_text(*limit)))
                    .collect();
                tracing::info!(
                    host = %host,
                    rate_limit_per_minute = %limit_text(strictest),
                    "pipelines of this run set different rate_limit_per_minute for one host ({}); all of them share the strictest, {}",
                    each.join(", "),
                    limit_text(strictest)
                );
            }
            by_host.insert(host, Arc::new(RequestBudget::new(strictest.per_minute())));
        }
        Budgets {
            by_host: std::sync::Mutex::new(by_host),
        }
    }

    fn for_host(&self, url: &Url, limit: RateLimit) -> Arc<RequestBudget> {
        let mut map = self.by_host.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(
            map.entry(host_key(url))
                .or_insert_with(|| Arc::new(RequestBudget::new(limit.per_minute()))),
        )
    }
}

/// What one request budget is shared by: a host and port.
fn host_key(url: &Url) -> String {
    format!(
        "{}:{}",
        url.host_str().unwrap_or_default(),
        url.port_or_known_default().unwrap_or_default()
    )
}

/// The lowest of `limits`; unlimited only when all are.
fn strictest(limits: impl Iterator<Item = RateLimit>) -> RateLimit {
    limits
        .filter_map(RateLimit::per_minute)
        .min()
        .map_or(RateLimit::Unlimited, RateLimit::PerMinute)
}

fn limit_text(limit: RateLimit) -> String {
    match limit.per_minute() {
        Some(n) => format!("{n}/min"),
        None => "unlimited".to_owned(),
    }
}

/// How one stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamStatus {
    /// Loaded and published.
    Loaded,
    /// The key's role may not read the endpoint (403); other streams went on.
    Forbidden(String),
    /// Failed; its table keeps the previous data.
    Failed(String),
    /// Not completed because the run stopped (401 elsewhere, a signal).
    Stopped,
}

impl StreamStatus {
    /// `loaded`, `forbidden`, `failed` or `stopped`, and the error if any:
    /// the words of the run history and of the JSON summary.
    pub fn name_and_error(&self) -> (&'static str, Option<String>) {
        match self {
            StreamStatus::Loaded => ("loaded", None),
            StreamStatus::Forbidden(e) => ("forbidden", Some(e.clone())),
            StreamStatus::Failed(e) => ("failed", Some(e.clone())),
            StreamStatus::Stopped => ("stopped", None),
        }
    }
}

/// The outcome of one stream, for the summary.
#[derive(Debug, Clone)]
pub struct StreamReport {
    /// Stream name.
    pub stream: String,
    /// How it ended.
    pub status: StreamStatus,
    /// Rows written to the destination.
    pub rows: u64,
    /// Records read from the API.
    pub records: u64,
    /// Pages read.
    pub pages: u64,
    /// The count the API reported, if any.
    pub api_count: Option<u64>,
    /// Requests sent, retries included.
    pub requests: u64,
    /// Retries.
    pub retries: u64,
    /// 429 responses.
    pub throttled: u64,
    /// Wall time of the stream.
    pub elapsed: Duration,
    /// Child tables written (arrays of objects) and their rows.
    pub child_tables: Vec<(String, u64)>,
    /// Fields the destination did not have (`on_schema_change`).
    pub schema_changes: Vec<SchemaChange>,
}

impl StreamReport {
    /// A stream as its live counters see it, with nothing written.
    fn counted(
        stream: &str,
        status: StreamStatus,
        counters: &StreamCounters,
        elapsed: Duration,
    ) -> Self {
        StreamReport {
            stream: stream.to_owned(),
            status,
            rows: 0,
            records: StreamCounters::get(&counters.records),
            pages: StreamCounters::get(&counters.pages),
            api_count: counters.api_count(),
            requests: StreamCounters::get(&counters.requests),
            retries: StreamCounters::get(&counters.retries),
            throttled: StreamCounters::get(&counters.throttled),
            elapsed,
            child_tables: Vec::new(),
            schema_changes: Vec::new(),
        }
    }
}

/// The outcome of a pipeline run.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// Pipeline name.
    pub pipeline: String,
    /// This run's id.
    pub run_id: String,
    /// One entry per stream, in pipeline order.
    pub streams: Vec<StreamReport>,
}

impl RunReport {
    /// True when every stream loaded.
    pub fn all_loaded(&self) -> bool {
        self.streams
            .iter()
            .all(|s| s.status == StreamStatus::Loaded)
    }
}

/// Why a run could not complete.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The pipeline's key or URL could not be resolved.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// The API key was rejected: nothing was written. `partial` holds
    /// what each stream had sent, when the streams had started.
    #[error("pipeline `{pipeline}`: {source}; the destination was left untouched")]
    KeyRejected {
        pipeline: String,
        source: ExtractError,
        partial: Option<RunReport>,
    },
    /// A signal stopped the run: nothing was written. `partial` holds what
    /// each stream had sent.
    #[error("pipeline `{pipeline}`: interrupted; the destination was left untouched")]
    Interrupted {
        pipeline: String,
        partial: Option<RunReport>,
    },
    /// The destination could not be opened or published.
    #[error("pipeline `{pipeline}`: {source}")]
    Load { pipeline: String, source: LoadError },
    /// Sampled records could not be read (`schema --sample`).
    #[error("pipeline `{pipeline}`: {source}")]
    Transform {
        pipeline: String,
        source: TransformError,
    },
    /// The HTTP client could not be built.
    #[error("pipeline `{pipeline}`: {source}")]
    Client {
        pipeline: String,
        source: ExtractError,
    },
}

impl RunError {
    /// The stream and URL the error happened on, when it names them (a
    /// rejected key: the request that got the 401).
    pub fn stream_and_url(&self) -> Option<(&str, &str)> {
        match self {
            RunError::KeyRejected {
                source: ExtractError::KeyRejected { stream, url },
                ..
            } => Some((stream, url)),
            _ => None,
        }
    }

    /// What each stream had done when the run stopped as a whole (a
    /// rejected key, a signal), every stream `failed` or `stopped` with no
    /// rows: the requests it sent still count against the tenant's budget.
    pub fn partial_report(&self) -> Option<&RunReport> {
        match self {
            RunError::KeyRejected { partial, .. } | RunError::Interrupted { partial, .. } => {
                partial.as_ref()
            }
            _ => None,
        }
    }

    /// True when the API key was rejected.
    pub fn is_key_rejected(&self) -> bool {
        matches!(self, RunError::KeyRejected { .. })
    }

    /// True when the key has no rights on what was asked (403).
    pub fn is_forbidden(&self) -> bool {
        matches!(self, RunError::Client { source, .. } if source.is_forbidden())
    }
}

/// A new run id: UTC time and a random suffix, sortable.
pub fn new_run_id() -> String {
    format!(
        "{}-{:04x}",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
        rand::random::<u16>()
    )
}

enum LoadMsg {
    Batch(usize, TableBatch),
    /// The stream ended; `Some` on success, `None` when it failed.
    End(usize, Option<StreamEnd>),
}

/// What a successful stream hands the loader.
struct StreamEnd {
    /// The incremental cursor reached, if any.
    cursor: Option<String>,
    /// The stream's tables: its own first, then its child tables.
    tables: Vec<String>,
    /// Their columns, with the Lucca field each holds.
    columns: Vec<ColumnInfo>,
}

/// What a stream's transform produced, besides its batches.
#[derive(Debug, Clone, Default)]
struct TransformOutput {
    cursor: Option<String>,
    tables: Vec<String>,
    columns: Vec<ColumnInfo>,
    schema_changes: Vec<SchemaChange>,
}

/// Options of one run, from the command line.
#[derive(Clone, Default)]
pub struct RunOptions {
    /// Ignore stored incremental state for this run.
    pub full_refresh: bool,
    /// Read at most this many records per stream (trying a pipeline); the
    /// incremental state is then left as it was.
    pub limit: Option<u64>,
    /// Told about each stream as it starts, to show progress.
    pub progress: Option<Arc<dyn Progress>>,
}

/// Receives the live counters of each stream (e.g. to draw progress bars).
pub trait Progress: Send + Sync {
    /// A stream starts; `counters` fill up as it is read.
    fn stream_started(&self, stream: &StreamStart, counters: Arc<StreamCounters>);
    /// The pipeline's run is over (its summary is about to be printed).
    fn finish(&self);
}

/// What a progress display knows of a stream when it starts.
#[derive(Debug, Clone)]
pub struct StreamStart {
    /// Pipeline name.
    pub pipeline: String,
    /// Stream name.
    pub stream: String,
    /// Records per request.
    pub page_size: u32,
    /// Requests per minute the budget allows, `None` when unlimited.
    pub rate_limit_per_minute: Option<u32>,
    /// Date windows of a sliced stream, read one after the other (0: not
    /// sliced): the API counts each window apart.
    pub windows: u64,
}

/// What a stream's tasks produced before the loader's verdict.
struct StreamOutcome {
    extract: Result<ExtractSummary, ExtractError>,
    transform: Result<TransformOutput, TransformError>,
    elapsed: Duration,
}

/// Runs one pipeline. `stop` is cancelled on a signal (and by the client on
/// a 401); budgets are shared across the pipelines of one invocation.
pub async fn run_pipeline(
    pipeline: &Pipeline,
    settings: &Settings,
    budgets: &Budgets,
    stop: &CancellationToken,
    options: &RunOptions,
) -> Result<RunReport, RunError> {
    let spec = &pipeline.spec;
    let name = spec.name.clone();
    let base_url = pipeline.base_url()?;
    let run_id = new_run_id();

    let pii_key = pipeline.pii_key()?;
    let budget = budgets.for_host(&base_url, spec.source.rate_limit_per_minute);
    let (extractor, rejection) = tenant_extractor(pipeline, settings, budget, stop)?;

    let load_options = LoadOptions {
        duckdb_memory_limit: settings.duckdb_memory_limit.clone(),
    };
    let load =
        Load::open(&spec.destination, &run_id, &load_options).map_err(|source| RunError::Load {
            pipeline: name.clone(),
            source,
        })?;

    // Incremental cursors, read from the destination before anything runs;
    // a sliced stream's state is the day its last run read up to.
    let today = run_day();
    let mut since: Vec<Option<(String, String)>> = Vec::new();
    let mut windows: Vec<Option<Vec<Window>>> = Vec::new();
    let mut slice_states: Vec<Option<(String, String)>> = Vec::new();
    for stream in &pipeline.streams {
        let sliced = stream.slice.as_ref();
        let reads_state = stream.spec.incremental.is_some()
            || (sliced.is_some() && stream.spec.write_mode != WriteMode::Replace);
        let stored = if options.full_refresh || !reads_state {
            None
        } else {
            match load.read_state(&name, &stream.spec.name) {
                Ok(state) => state,
                Err(source) => {
                    load.abandon();
                    return Err(RunError::Load {
                        pipeline: name,
                        source,
                    });
                }
            }
        };
        slice_states.push(sliced.map(|slice| {
            let read_to = slice.to.resolve(today).min(today);
            (slice.field.clone(), read_to.format("%Y-%m-%d").to_string())
        }));
        windows.push(sliced.map(|slice| {
            let last_day = stored
                .as_deref()
                .and_then(|s| crate::pipeline::slice::parse_day(s).ok());
            slice.windows(today, last_day)
        }));
        let Some(incremental) = &stream.spec.incremental else {
            since.push(None);
            continue;
        };
        let lookback = Duration::from_secs(incremental.lookback_secs.unwrap_or(300));
        since.push(stored.map(|cursor| {
            (
                incremental.cursor_field.clone(),
                crate::extract::since_value(&cursor, lookback),
            )
        }));
    }
    let commits: Vec<StreamCommit> = pipeline
        .streams
        .iter()
        .map(|s| StreamCommit {
            pipeline: name.clone(),
            run_id: run_id.clone(),
            write_mode: s.spec.write_mode,
            primary_key: s
                .primary_key
                .iter()
                .map(|k| stream_column(&s.spec, k))
                .collect(),
            state: None,
            table_comment: format!(
                "Lucca {} (stream `{}` of pipeline `{name}`), loaded by lucca-sync",
                s.spec.endpoint, s.spec.name
            ),
            // Made at the commit, from the columns the stream made.
            column_comments: Vec::new(),
            partition_by: s.spec.partition_by.clone(),
            parent: None,
            version_key: match (&s.spec.incremental, &s.slice) {
                _ if s.spec.write_mode != WriteMode::Append => VersionKey::None,
                (Some(incremental), _) if !s.primary_key.is_empty() => VersionKey::Columns(
                    s.primary_key
                        .iter()
                        .chain(std::iter::once(&incremental.cursor_field))
                        .map(|k| stream_column(&s.spec, k))
                        .collect(),
                ),
                (_, Some(_)) => VersionKey::WholeRow,
                _ => VersionKey::None,
            },
        })
        .collect();
    let run_started = chrono::Utc::now();

    let mut plans = Vec::new();
    for (index, stream) in pipeline.streams.iter().enumerate() {
        let since_filter = since[index]
            .as_ref()
            .map(|(field, value)| (field.as_str(), value.as_str()));
        match stream_plan(
            pipeline,
            stream,
            &base_url,
            since_filter,
            windows[index].as_deref(),
        ) {
            Ok(plan) => plans.push(plan.with_limit(options.limit)),
            Err(e) => {
                load.abandon();
                return Err(e);
            }
        }
    }

    // The destination's tables of each stream, for schema drift and for
    // child tables this run does not write.
    let mut existing = Vec::new();
    for stream in &pipeline.streams {
        match load.existing_tables(&stream.spec.name) {
            Ok(tables) => existing.push(tables),
            Err(source) => {
                load.abandon();
                return Err(RunError::Load {
                    pipeline: name,
                    source,
                });
            }
        }
    }

    let (load_tx, mut load_rx) = mpsc::channel::<LoadMsg>(BATCH_CHANNEL);
    let stream_names: Vec<String> = pipeline
        .streams
        .iter()
        .map(|s| s.spec.name.clone())
        .collect();
    let existing_children: Vec<Vec<String>> = existing
        .iter()
        .zip(&stream_names)
        .map(|(tables, stream)| {
            let mut children: Vec<String> =
                tables.keys().filter(|t| *t != stream).cloned().collect();
            children.sort();
            children
        })
        .collect();
    let cursor_fields: Vec<Option<String>> = pipeline
        .streams
        .iter()
        .map(|s| s.spec.incremental.as_ref().map(|i| i.cursor_field.clone()))
        .collect();
    let endpoints: Vec<String> = pipeline
        .streams
        .iter()
        .map(|s| s.spec.endpoint.clone())
        .collect();
    let limited = options.limit.is_some();
    let loader = tokio::task::spawn_blocking(move || {
        let mut load = load;
        let mut failed: HashMap<usize, LoadError> = HashMap::new();
        let mut written: HashMap<usize, Vec<String>> = HashMap::new();
        let mut results: HashMap<usize, Result<Vec<(String, u64)>, LoadError>> = HashMap::new();
        while let Some(msg) = load_rx.blocking_recv() {
            match msg {
                LoadMsg::Batch(i, output) => {
                    if failed.contains_key(&i) {
                        continue;
                    }
                    let tables = written.entry(i).or_default();
                    if !tables.contains(&output.table) {
                        tables.push(output.table.clone());
                    }
                    if let Err(e) = load.write(&output.table, &output.batch) {
                        failed.insert(i, e);
                    }
                }
                LoadMsg::End(i, end) => {
                    let tables = written.remove(&i).unwrap_or_default();
                    let result = match (failed.remove(&i), end) {
                        (None, Some(end)) => {
                            let mut commit = commits[i].clone();
                            // A limited run read only part of the stream:
                            // its cursor would skip the rest next time.
                            commit.state = match &slice_states[i] {
                                Some(state) => Some(state.clone()),
                                None => end
                                    .cursor
                                    .clone()
                                    .zip(cursor_fields[i].clone())
                                    .map(|(c, f)| (f, c)),
                            }
                            .filter(|_| !limited);
                            commit_tables(
                                &mut load,
                                &commit,
                                &end,
                                &endpoints[i],
                                &existing_children[i],
                            )
                        }
                        (failure, _) => {
                            for table in &tables {
                                let _ = load.discard_stream(table);
                            }
                            failure.map_or(Ok(Vec::new()), Err)
                        }
                    };
                    results.insert(i, result);
                }
            }
        }
        (load, results)
    });

    let mut tasks = Vec::new();
    for (index, (stream, plan)) in pipeline.streams.iter().zip(plans).enumerate() {
        let cursor_field = stream
            .spec
            .incremental
            .as_ref()
            .map(|i| i.cursor_field.clone());
        let counters = Arc::new(StreamCounters::default());
        if let Some(progress) = &options.progress {
            progress.stream_started(
                &StreamStart {
                    pipeline: name.clone(),
                    stream: stream.spec.name.clone(),
                    page_size: plan.page_size,
                    rate_limit_per_minute: spec.source.rate_limit_per_minute.per_minute(),
                    windows: plan.windows.len() as u64,
                },
                Arc::clone(&counters),
            );
        }
        let extractor = extractor.clone();
        let load_tx = load_tx.clone();
        let fields = stream.fields.clone();
        let policies = ColumnPolicies::of(&stream.spec, pii_key.clone())
            .with_existing(existing[index].clone());
        let task_counters = Arc::clone(&counters);
        let handle = tokio::spawn(async move {
            let started = Instant::now();
            let (page_tx, page_rx) = mpsc::channel::<Page>(PAGE_CHANNEL);
            let transform_tx = load_tx.clone();
            let stream_name = plan.stream.clone();
            let transform = tokio::task::spawn_blocking(move || {
                transform_stream(
                    &stream_name,
                    &fields,
                    policies,
                    cursor_field.as_deref(),
                    index,
                    page_rx,
                    transform_tx,
                )
            });
            let extract = extractor
                .extract_stream(&plan, task_counters, page_tx)
                .await;
            let transform = match transform.await {
                Ok(result) => result,
                Err(join) => Err(TransformError::Arrow {
                    stream: plan.stream.clone(),
                    source: arrow::error::ArrowError::ExternalError(Box::new(join)),
                }),
            };
            let outcome = match (&extract, &transform) {
                (Ok(_), Ok(output)) => Some(StreamEnd {
                    cursor: output.cursor.clone(),
                    tables: output.tables.clone(),
                    columns: output.columns.clone(),
                }),
                _ => None,
            };
            let _ = load_tx.send(LoadMsg::End(index, outcome)).await;
            StreamOutcome {
                extract,
                transform,
                elapsed: started.elapsed(),
            }
        });
        tasks.push((handle, counters));
    }
    drop(load_tx);

    let mut outcomes = Vec::new();
    for (handle, counters) in tasks {
        let outcome = handle.await.unwrap_or_else(|join| StreamOutcome {
            extract: Err(ExtractError::Client(format!("stream task failed: {join}"))),
            transform: Ok(TransformOutput::default()),
            elapsed: Duration::ZERO,
        });
        outcomes.push((outcome, counters));
    }
    let (load, mut loaded) = loader.await.map_err(|join| RunError::Load {
        pipeline: name.clone(),
        source: LoadError::Io {
            action: "finish loading".into(),
            path: pipeline.path.clone(),
            source: std::io::Error::other(join.to_string()),
        },
    })?;

    // A rejected key or a signal: nothing is published.
    let unpublished = |status: StreamStatus| RunReport {
        pipeline: name.clone(),
        run_id: run_id.clone(),
        streams: outcomes
            .iter()
            .zip(&stream_names)
            .map(|((outcome, counters), stream)| {
                StreamReport::counted(stream, status.clone(), counters, outcome.elapsed)
            })
            .collect(),
    };
    if let Some(url) = rejection.url() {
        load.abandon();
        let source = key_rejected(pipeline, url);
        let partial = unpublished(StreamStatus::Failed(source.to_string()));
        return Err(RunError::KeyRejected {
            pipeline: name,
            source,
            partial: Some(partial),
        });
    }
    if stop.is_cancelled() {
        load.abandon();
        let partial = unpublished(StreamStatus::Stopped);
        return Err(RunError::Interrupted {
            pipeline: name,
            partial: Some(partial),
        });
    }

    let mut reports = Vec::new();
    let mut history = Vec::new();
    for (index, (outcome, counters)) in outcomes.into_iter().enumerate() {
        let (load_result, child_tables) = match loaded.remove(&index) {
            Some(Ok(mut tables)) => {
                let own = if tables.is_empty() {
                    0
                } else {
                    tables.remove(0).1
                };
                (Some(Ok(own)), tables)
            }
            Some(Err(e)) => (Some(Err(e)), Vec::new()),
            None => (None, Vec::new()),
        };
        let (status, rows) = match (&outcome.extract, &outcome.transform, load_result) {
            (Err(e), _, _) if e.is_forbidden() => (StreamStatus::Forbidden(e.to_string()), 0),
            (_, Err(e), _) => (StreamStatus::Failed(e.to_string()), 0),
            (Err(ExtractError::Stopped { .. }), _, _) => (StreamStatus::Stopped, 0),
            (Err(e), _, _) => (StreamStatus::Failed(e.to_string()), 0),
            (Ok(_), Ok(_), Some(Ok(rows))) => (StreamStatus::Loaded, rows),
            (Ok(_), Ok(_), Some(Err(e))) => (StreamStatus::Failed(e.to_string()), 0),
            (Ok(_), Ok(_), None) => (StreamStatus::Failed("the loader lost the stream".into()), 0),
        };
        let summary = outcome.extract.as_ref().ok().cloned().unwrap_or_default();
        // Records read, not rows loaded: an append leaves out what it read
        // again and a merge folds versions of a key, by design. A `--limit`
        // run stops short of the count on purpose.
        let count_mismatch = status == StreamStatus::Loaded
            && !limited
            && summary
                .api_count
                .is_some_and(|count| count != summary.records);
        if count_mismatch {
            let count = summary.api_count.unwrap_or_default();
            let records = summary.records;
            tracing::warn!(pipeline = %name, stream = %stream_names[index], records, api_count = count, "the API reported {count} records but {records} were read");
        }
        let (status_name, error) = status.name_and_error();
        history.push(RunRecord {
            run_id: run_id.clone(),
            pipeline: name.clone(),
            stream: stream_names[index].clone(),
            started_at: run_started,
            finished_at: run_started
                + chrono::Duration::from_std(outcome.elapsed).unwrap_or_default(),
            status: status_name.to_owned(),
            rows_written: rows,
            records_read: summary.records,
            requests: StreamCounters::get(&counters.requests),
            retries: StreamCounters::get(&counters.retries),
            throttled: StreamCounters::get(&counters.throttled),
            api_count: summary.api_count,
            count_mismatch,
            error,
        });
        reports.push(StreamReport {
            rows,
            records: summary.records,
            pages: summary.pages,
            api_count: summary.api_count,
            child_tables,
            schema_changes: outcome
                .transform
                .as_ref()
                .map(|t| t.schema_changes.clone())
                .unwrap_or_default(),
            ..StreamReport::counted(&stream_names[index], status, &counters, outcome.elapsed)
        });
    }
    load.publish(&history).map_err(|source| RunError::Load {
        pipeline: name.clone(),
        source,
    })?;
    Ok(RunReport {
        pipeline: name,
        run_id,
        streams: reports,
    })
}

/// Commits a successful stream's tables: its child tables first (a merged
/// child needs its parent's staged keys), then its own table, each with a
/// comment on every column naming the Lucca field it holds. Child tables
/// of earlier runs that this run did not write are committed empty (a
/// replaced stream empties them). Returns (table, rows), its own first.
fn commit_tables(
    load: &mut Load,
    commit: &StreamCommit,
    end: &StreamEnd,
    endpoint: &str,
    existing_children: &[String],
) -> Result<Vec<(String, u64)>, LoadError> {
    let comments = |table: &str| -> Vec<(String, String)> {
        end.columns
            .iter()
            .filter(|c| c.table == table && !c.field.is_empty())
            .map(|c| {
                let text = format!("Lucca field `{}` of {endpoint}", c.field);
                (c.column.clone(), text)
            })
            .collect()
    };
    let stream = end.tables.first().cloned().unwrap_or_default();
    let mut children: Vec<String> = end.tables.iter().skip(1).cloned().collect();
    for table in existing_children {
        if !children.contains(table) {
            children.push(table.clone());
        }
    }
    let mut rows = Vec::new();
    for child in &children {
        let mut child_commit = commit.for_child(&stream, child);
        child_commit.column_comments = comments(child);
        let n = load.commit_stream(child, &child_commit)?;
        rows.push((child.clone(), n));
    }
    let mut commit = commit.clone();
    commit.column_comments = comments(&stream);
    let n = load.commit_stream(&stream, &commit)?;
    rows.insert(0, (stream, n));
    Ok(rows)
}

/// The transform loop of one stream, on a blocking thread: pages in,
/// batches out to the loader.
fn transform_stream(
    stream: &str,
    fields: &[crate::pipeline::FieldNode],
    policies: ColumnPolicies,
    cursor_field: Option<&str>,
    index: usize,
    mut pages: mpsc::Receiver<Page>,
    load: mpsc::Sender<LoadMsg>,
) -> Result<TransformOutput, TransformError> {
    let mut transform = StreamTransform::new(stream, fields).with_policies(policies);
    if let Some(field) = cursor_field {
        transform = transform.with_cursor_field(field);
    }
    let mut records = 0;
    while let Some(page) = pages.blocking_recv() {
        records += page.len();
        for batch in transform.push_page(&page)? {
            if load.blocking_send(LoadMsg::Batch(index, batch)).is_err() {
                return Ok(TransformOutput::default());
            }
        }
    }
    for batch in transform.finish()? {
        let _ = load.blocking_send(LoadMsg::Batch(index, batch));
    }
    if transform.nulled_values() > 0 {
        tracing::warn!(
            stream,
            nulled_values = transform.nulled_values(),
            "{} values did not fit their column and were stored as NULL (on_bad_value: null)",
            transform.nulled_values()
        );
    }
    if let Some(field) = cursor_field
        && records > 0
        && transform.max_cursor().is_none()
    {
        tracing::warn!(
            stream,
            cursor_field = field,
            records,
            "none of the {records} records read had a date, datetime or integer `{field}`: \
             no cursor is stored, so the next run reads every record again \
             (check how the endpoint spells it: Lucca also writes `modifiedOn`)"
        );
    }
    Ok(TransformOutput {
        cursor: transform.max_cursor().map(str::to_owned),
        tables: transform.tables(),
        columns: transform.describe(),
        schema_changes: transform.schema_changes(),
    })
}

/// Points a destination into `dir`, keeping its file or directory name
/// (the demo writes under `out/demo/`).
pub fn redirect_destination(
    destination: &mut crate::pipeline::DestinationSpec,
    dir: &std::path::Path,
) {
    use crate::pipeline::DestinationSpec;
    match destination {
        DestinationSpec::Duckdb(d) => {
            d.path = dir.join(
                d.path
                    .file_name()
                    .unwrap_or_else(|| "lucca.duckdb".as_ref()),
            );
        }
        DestinationSpec::Parquet(p) => {
            p.dir = dir.join(p.dir.file_name().unwrap_or_else(|| "parquet".as_ref()));
        }
    }
}

/// Sends one authenticated request for the pipeline's first stream (a
/// one-record page) and says what the API answered.
pub async fn check_pipeline(pipeline: &Pipeline, settings: &Settings) -> Result<String, RunError> {
    let base_url = pipeline.base_url()?;
    let Some(stream) = pipeline.streams.first() else {
        return Ok("no stream to check".into());
    };
    let (extractor, rejection) = tenant_extractor(
        pipeline,
        settings,
        Arc::new(RequestBudget::new(None)),
        &CancellationToken::new(),
    )?;
    let plan = stream_plan(pipeline, stream, &base_url, None, None)?;
    let count = probe(&extractor, &rejection, pipeline, &plan).await?;
    Ok(match count {
        Some(n) => format!(
            "the key was accepted; `{}` reports {n} records at {}",
            stream.spec.name, stream.spec.endpoint
        ),
        None => format!(
            "the key was accepted; `{}` answered at {}",
            stream.spec.name, stream.spec.endpoint
        ),
    })
}

/// What a run of one stream would fetch.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PlannedStream {
    /// Stream name.
    pub stream: String,
    /// Endpoint path.
    pub endpoint: String,
    /// Records the API reports (a full read), if it reports a count.
    pub records: Option<u64>,
    /// Records per request.
    pub page_size: u32,
    /// Requests the run would send, when the count is known.
    pub requests: Option<u64>,
    /// Why the count request failed (a 403, an endpoint that does not
    /// answer): the run would fail or skip this stream the same way.
    pub problem: Option<StreamProblem>,
}

/// A stream whose count request failed, in a dry run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StreamProblem {
    /// The key may not read it (403): a run skips it and exits 4.
    pub forbidden: bool,
    /// The error, naming the URL.
    pub message: String,
}

/// What a run of a pipeline would fetch, and how long its request budget
/// makes it take.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunPlan {
    /// Pipeline name.
    pub pipeline: String,
    /// One entry per stream.
    pub streams: Vec<PlannedStream>,
    /// Requests per minute allowed, `None` when unlimited.
    pub rate_limit_per_minute: Option<u32>,
    /// Seconds the budget alone makes the run last (requests x 60 / rate),
    /// when the rate is limited and every count is known.
    pub budget_secs: Option<f64>,
}

/// `run --dry-run`: asks the API for each stream's count (one request per
/// stream, a one-record page) and writes nothing.
pub async fn plan_pipeline(
    pipeline: &Pipeline,
    settings: &Settings,
    options: &RunOptions,
) -> Result<RunPlan, RunError> {
    let base_url = pipeline.base_url()?;
    let rate = pipeline.spec.source.rate_limit_per_minute.per_minute();
    let budget = Arc::new(RequestBudget::new(rate));
    let (extractor, rejection) =
        tenant_extractor(pipeline, settings, budget, &CancellationToken::new())?;
    let mut streams = Vec::new();
    for stream in &pipeline.streams {
        // A sliced stream's count comes from one query over its whole range.
        let plan = stream_plan(pipeline, stream, &base_url, None, None)?;
        // A rejected key stops everything; another failure is this
        // stream's own, and the plan goes on with the next.
        let (count, problem) = match probe(&extractor, &rejection, pipeline, &plan).await {
            Ok(count) => (count, None),
            Err(e) if e.is_key_rejected() => return Err(e),
            Err(e) => (
                None,
                Some(StreamProblem {
                    forbidden: e.is_forbidden(),
                    message: e.to_string(),
                }),
            ),
        };
        let records = match (count, options.limit) {
            (Some(count), Some(limit)) => Some(count.min(limit)),
            (count, _) => count,
        };
        let page_size = plan.with_limit(options.limit).page_size;
        // Each window costs at least one request.
        let windows = stream
            .slice
            .as_ref()
            .map_or(1, |s| s.windows(run_day(), None).len() as u64);
        let windows = if options.limit.is_some() { 1 } else { windows };
        streams.push(PlannedStream {
            stream: stream.spec.name.clone(),
            endpoint: stream.spec.endpoint.clone(),
            records,
            page_size,
            requests: records
                .map(|n| expected_requests(n, page_size, options.limit.is_some()).max(windows)),
            problem,
        });
    }
    let total: Option<u64> = streams.iter().map(|s| s.requests).sum();
    Ok(RunPlan {
        pipeline: pipeline.spec.name.clone(),
        budget_secs: rate
            .zip(total)
            .map(|(rate, requests)| requests as f64 * 60.0 / f64::from(rate.max(1))),
        rate_limit_per_minute: rate,
        streams,
    })
}

/// Requests a read of `records` takes in pages of `page_size`: its pages,
/// and one more when the last is full (it checks that the API's count is
/// not short of the truth; an empty collection is that one request). A
/// `--limit` read stops at its last page.
fn expected_requests(records: u64, page_size: u32, limited: bool) -> u64 {
    let page_size = u64::from(page_size.max(1));
    let last_page_full = records.is_multiple_of(page_size);
    records.div_ceil(page_size) + u64::from(last_page_full && !limited)
}

/// The columns of each stream's tables: as declared (`fields`, `columns`)
/// or, with `sample_pages`, as the transform lays them out from the first
/// pages of each stream (types inferred, child tables found). Writes
/// nothing; sampling sends at most `sample_pages` requests per stream.
pub async fn resolve_schema(
    pipeline: &Pipeline,
    settings: &Settings,
    sample_pages: Option<u32>,
) -> Result<Vec<ColumnInfo>, RunError> {
    let pii_key = pipeline.pii_key()?;
    let mut columns = Vec::new();
    let sampler = match sample_pages {
        Some(pages) => {
            let rate = pipeline.spec.source.rate_limit_per_minute.per_minute();
            let (extractor, rejection) = tenant_extractor(
                pipeline,
                settings,
                Arc::new(RequestBudget::new(rate)),
                &CancellationToken::new(),
            )?;
            Some((extractor, rejection, pipeline.base_url()?, pages.max(1)))
        }
        None => None,
    };
    for stream in &pipeline.streams {
        let mut transform = StreamTransform::new(&stream.spec.name, &stream.fields)
            .with_policies(ColumnPolicies::of(&stream.spec, pii_key.clone()))
            .with_warmup_rows(usize::MAX);
        if let Some((extractor, rejection, base_url, pages)) = &sampler {
            let plan = stream_plan(pipeline, stream, base_url, None, None)?
                .with_limit(Some(u64::from(stream.page_size) * u64::from(*pages)));
            let (page_tx, mut page_rx) = mpsc::channel::<Page>(PAGE_CHANNEL);
            let extract =
                extractor.extract_stream(&plan, Arc::new(StreamCounters::default()), page_tx);
            let consume = async {
                while let Some(page) = page_rx.recv().await {
                    transform.push_page(&page)?;
                }
                transform.finish().map(|_| ())
            };
            let (extracted, transformed) = tokio::join!(extract, consume);
            extracted.map_err(|source| request_error(pipeline, rejection, source))?;
            transformed.map_err(|source| RunError::Transform {
                pipeline: pipeline.spec.name.clone(),
                source,
            })?;
        }
        columns.extend(transform.describe());
    }
    Ok(columns)
}

/// One authenticated one-record request: the count the API reports.
async fn probe(
    extractor: &Extractor,
    rejection: &KeyRejection,
    pipeline: &Pipeline,
    plan: &StreamPlan,
) -> Result<Option<u64>, RunError> {
    extractor
        .probe(plan, Arc::new(StreamCounters::default()))
        .await
        .map_err(|source| request_error(pipeline, rejection, source))
}

/// The run error of a failed request outside a run: a rejected key, or
/// the request's own error.
fn request_error(pipeline: &Pipeline, rejection: &KeyRejection, source: ExtractError) -> RunError {
    match rejection.url() {
        Some(url) => RunError::KeyRejected {
            pipeline: pipeline.spec.name.clone(),
            source: key_rejected(pipeline, url),
            partial: None,
        },
        None => RunError::Client {
            pipeline: pipeline.spec.name.clone(),
            source,
        },
    }
}

/// The day of the run (local time, as Lucca's naive dates), for slicing.
fn run_day() -> chrono::NaiveDate {
    chrono::Local::now().date_naive()
}

/// A stream's plan; a sliced stream reads `windows`, or when `None` its
/// whole range as one window (a single probe).
fn stream_plan(
    pipeline: &Pipeline,
    stream: &ResolvedStream,
    base_url: &Url,
    since: Option<(&str, &str)>,
    windows: Option<&[Window]>,
) -> Result<StreamPlan, RunError> {
    let plan = StreamPlan::new(
        &pipeline.spec.name,
        &stream.spec.name,
        base_url,
        &stream.spec.endpoint,
        &stream.spec.params,
        &fields_query(&stream.fields),
        stream.paging,
        stream.page_by,
        stream.page_size,
        since,
    )
    .map(|plan| {
        if stream.primary_key == ["id"] {
            plan.sorted_by_id()
        } else {
            plan
        }
    })
    .map_err(|e| {
        RunError::Pipeline(PipelineError::new(
            &pipeline.path,
            0,
            0,
            format!(
                "stream `{}`: endpoint `{}`: {e}",
                stream.spec.name, stream.spec.endpoint
            ),
        ))
    })?;
    Ok(match &stream.slice {
        None => plan,
        Some(slice) => {
            let whole = [slice.whole(run_day())];
            let windows = windows.unwrap_or(&whole[..]);
            plan.with_windows(&slice.field, windows.iter().map(Window::between).collect())
        }
    })
}

/// The error of a 401, naming the stream whose endpoint got it.
fn key_rejected(pipeline: &Pipeline, url: &str) -> ExtractError {
    let path = Url::parse(url)
        .map(|u| u.path().to_owned())
        .unwrap_or_default();
    let stream = pipeline
        .streams
        .iter()
        .find(|s| path.ends_with(s.spec.endpoint.as_str()))
        .map(|s| s.spec.name.clone())
        .unwrap_or_default();
    ExtractError::KeyRejected {
        stream,
        url: url.to_owned(),
    }
}

/// The extractor of a pipeline's tenant: its client (key, timeouts, budget,
/// stop-on-401 gate) and retry limits; the rejection records a 401.
fn tenant_extractor(
    pipeline: &Pipeline,
    settings: &Settings,
    budget: Arc<RequestBudget>,
    stop: &CancellationToken,
) -> Result<(Extractor, KeyRejection), RunError> {
    let source = &pipeline.spec.source;
    let rejection = KeyRejection::default();
    let api_key = pipeline.api_key()?;
    let http = build_client(
        &api_key,
        settings.timeouts(source),
        Arc::clone(&budget),
        stop.clone(),
        rejection.clone(),
    )
    .map_err(|e| RunError::Client {
        pipeline: pipeline.spec.name.clone(),
        source: ExtractError::Client(e.to_string()),
    })?;
    let extractor = Extractor {
        http,
        retry: settings.retry(source),
        stop: stop.clone(),
        pool: Arc::default(),
        budget,
        api_key,
    };
    Ok((extractor, rejection))
}

#[cfg(test)]
mod tests {
    use super::expected_requests;

    #[test]
    fn a_full_last_page_is_checked_with_one_request_more() {
        assert_eq!(expected_requests(2_500, 1_000, false), 3);
        assert_eq!(expected_requests(3_000, 1_000, false), 4);
        assert_eq!(expected_requests(0, 1_000, false), 1, "one empty page");
        assert_eq!(expected_requests(3_000, 1_000, true), 3, "--limit stops");
    }
}
