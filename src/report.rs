//! What a run tells the world besides its exit code: the end-of-run summary
//! as JSON (`run --summary-json`) and Prometheus metrics in the text format
//! of node-exporter's textfile collector (`run --metrics-file`). Both files
//! are replaced atomically, so a collector never reads half of one.

use std::fmt::Write as _;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::run::RunReport;

/// The summary of one invocation of `lucca-sync run`.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// When the invocation started (RFC 3339).
    #[serde(serialize_with = "rfc3339")]
    pub started_at: DateTime<Utc>,
    /// When it ended (RFC 3339).
    #[serde(serialize_with = "rfc3339")]
    pub finished_at: DateTime<Utc>,
    /// The process's exit code.
    pub exit_code: u8,
    /// One entry per pipeline that ran (or failed to).
    pub pipelines: Vec<PipelineSummary>,
}

fn rfc3339<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// How one pipeline's run ended.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineSummary {
    /// Pipeline name.
    pub pipeline: String,
    /// The run id, when the run got as far as having one published.
    pub run_id: Option<String>,
    /// The run-level error (key rejected, interrupted, destination), if any.
    pub error: Option<String>,
    /// One entry per stream, when the run completed.
    pub streams: Vec<StreamSummary>,
}

/// How one stream ended.
#[derive(Debug, Clone, Serialize)]
pub struct StreamSummary {
    /// Stream name.
    pub stream: String,
    /// `loaded`, `forbidden`, `failed` or `stopped`.
    pub status: String,
    /// Why it did not load.
    pub error: Option<String>,
    /// Rows written.
    pub rows: u64,
    /// Records read from the API.
    pub records: u64,
    /// Pages read.
    pub pages: u64,
    /// The count the API reported.
    pub api_count: Option<u64>,
    /// Requests sent, retries included.
    pub requests: u64,
    /// Retries.
    pub retries: u64,
    /// 429 answers.
    pub throttled: u64,
    /// Wall time, seconds.
    pub elapsed_secs: f64,
    /// Child tables written (arrays of objects), with their rows.
    pub child_tables: Vec<ChildTableSummary>,
    /// Fields the destination did not have: added or ignored
    /// (`on_schema_change`).
    pub schema_changes: Vec<crate::transform::SchemaChange>,
}

/// A child table of a stream and the rows written to it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChildTableSummary {
    /// Table name, e.g. `users__user_work_cycles`.
    pub table: String,
    /// Rows written.
    pub rows: u64,
}

impl PipelineSummary {
    /// The summary of a run that completed (some streams may have failed).
    pub fn completed(report: &RunReport) -> Self {
        PipelineSummary {
            pipeline: report.pipeline.clone(),
            run_id: Some(report.run_id.clone()),
            error: None,
            streams: report
                .streams
                .iter()
                .map(|s| {
                    let (status, error) = s.status.name_and_error();
                    StreamSummary {
                        stream: s.stream.clone(),
                        status: status.to_owned(),
                        error,
                        rows: s.rows,
                        records: s.records,
                        pages: s.pages,
                        api_count: s.api_count,
                        requests: s.requests,
                        retries: s.retries,
                        throttled: s.throttled,
                        elapsed_secs: s.elapsed.as_secs_f64(),
                        child_tables: s
                            .child_tables
                            .iter()
                            .map(|(table, rows)| ChildTableSummary {
                                table: table.clone(),
                                rows: *rows,
                            })
                            .collect(),
                        schema_changes: s.schema_changes.clone(),
                    }
                })
                .collect(),
        }
    }

    /// A pipeline stopped as a whole after its streams ran (a rejected
    /// key, a signal): each stream as `report` has it (`failed` or
    /// `stopped`, no rows, the requests it sent), with `error` where the
    /// stream has none of its own.
    pub fn unpublished(report: &RunReport, error: String) -> Self {
        let mut summary = PipelineSummary::completed(report);
        for stream in &mut summary.streams {
            stream.error.get_or_insert_with(|| error.clone());
        }
        summary.error = Some(error);
        summary
    }

    /// The summary of a run that stopped as a whole (a rejected key, a
    /// signal, a destination error): each of its streams with `status`
    /// (`failed`, or `stopped` for a signal) and nothing written, so that
    /// per-stream alerts see a 0, not a missing series.
    pub fn failed(pipeline: &str, streams: &[String], status: &str, error: String) -> Self {
        PipelineSummary {
            pipeline: pipeline.to_owned(),
            run_id: None,
            streams: streams
                .iter()
                .map(|stream| StreamSummary {
                    stream: stream.clone(),
                    status: status.to_owned(),
                    error: Some(error.clone()),
                    rows: 0,
                    records: 0,
                    pages: 0,
                    api_count: None,
                    requests: 0,
                    retries: 0,
                    throttled: 0,
                    elapsed_secs: 0.0,
                    child_tables: Vec::new(),
                    schema_changes: Vec::new(),
                })
                .collect(),
            error: Some(error),
        }
    }
}

/// A Prometheus label value: `\`, `"` and newlines escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The metric line prefix `name{pipeline="..",stream=".."}`.
fn series(name: &str, pipeline: &str, stream: &str) -> String {
    format!(
        "{name}{{pipeline=\"{}\",stream=\"{}\"}}",
        label(pipeline),
        label(stream)
    )
}

const LAST_SUCCESS: &str = "lucca_sync_last_success_timestamp_seconds";

/// The metrics of a run in Prometheus text format. `previous` is the file
/// the last run wrote: a stream that did not load this time keeps its last
/// success timestamp from there.
pub fn prometheus_text(summary: &RunSummary, previous: Option<&str>) -> String {
    type Metric = (&'static str, &'static str, fn(&StreamSummary) -> f64);
    let per_stream: [Metric; 7] = [
        (
            "lucca_sync_rows_written",
            "Rows written by the last run.",
            |s| s.rows as f64,
        ),
        (
            "lucca_sync_records_read",
            "Records read from the API by the last run.",
            |s| s.records as f64,
        ),
        (
            "lucca_sync_requests",
            "Requests sent by the last run, retries included.",
            |s| s.requests as f64,
        ),
        (
            "lucca_sync_retries",
            "Requests of the last run that were retries.",
            |s| s.retries as f64,
        ),
        (
            "lucca_sync_throttled_responses",
            "429 answers the last run received.",
            |s| s.throttled as f64,
        ),
        (
            "lucca_sync_stream_duration_seconds",
            "Wall time of the stream in the last run.",
            |s| s.elapsed_secs,
        ),
        (
            "lucca_sync_stream_success",
            "1 when the stream loaded in the last run, else 0.",
            |s| f64::from(u8::from(s.status == "loaded")),
        ),
    ];
    let mut out = String::new();
    for (name, help, value) in per_stream {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for p in &summary.pipelines {
            for s in &p.streams {
                let _ = writeln!(out, "{} {}", series(name, &p.pipeline, &s.stream), value(s));
            }
        }
    }

    // Last success: this run's end for loaded streams, else the previous
    // file's value, for every stream either knows.
    let mut last: Vec<(String, String)> = previous
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(LAST_SUCCESS))
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(series, value)| (series.to_owned(), value.to_owned()))
        .collect();
    let finished = summary.finished_at.timestamp().to_string();
    for p in &summary.pipelines {
        for s in p.streams.iter().filter(|s| s.status == "loaded") {
            let key = series(LAST_SUCCESS, &p.pipeline, &s.stream);
            match last.iter_mut().find(|(k, _)| *k == key) {
                Some(entry) => entry.1 = finished.clone(),
                None => last.push((key, finished.clone())),
            }
        }
    }
    let _ = writeln!(
        out,
        "# HELP {LAST_SUCCESS} When the stream last loaded successfully (Unix time).\n# TYPE {LAST_SUCCESS} gauge"
    );
    for (key, value) in &last {
        let _ = writeln!(out, "{key} {value}");
    }

    let _ = writeln!(
        out,
        "# HELP lucca_sync_run_exit_code Exit code of the last run.\n# TYPE lucca_sync_run_exit_code gauge\nlucca_sync_run_exit_code {}",
        summary.exit_code
    );
    let _ = writeln!(
        out,
        "# HELP lucca_sync_run_timestamp_seconds When the last run finished (Unix time).\n# TYPE lucca_sync_run_timestamp_seconds gauge\nlucca_sync_run_timestamp_seconds {finished}"
    );
    let duration = (summary.finished_at - summary.started_at)
        .to_std()
        .unwrap_or_default()
        .as_secs_f64();
    let _ = writeln!(
        out,
        "# HELP lucca_sync_run_duration_seconds Wall time of the last run.\n# TYPE lucca_sync_run_duration_seconds gauge\nlucca_sync_run_duration_seconds {duration}"
    );
    out
}

/// Replaces `path` with `bytes` atomically: a temporary file beside it,
/// flushed, then renamed over it.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    let temp = path.with_file_name(name);
    std::fs::write(&temp, bytes)
        .and_then(|()| std::fs::File::open(&temp).and_then(|f| f.sync_all()))
        .and_then(|()| std::fs::rename(&temp, path))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&temp);
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(name: &str, status: &str) -> StreamSummary {
        StreamSummary {
            stream: name.into(),
            status: status.into(),
            error: None,
            rows: 25,
            records: 25,
            pages: 1,
            api_count: Some(25),
            requests: 2,
            retries: 1,
            throttled: 1,
            elapsed_secs: 0.5,
            child_tables: Vec::new(),
            schema_changes: Vec::new(),
        }
    }

    #[test]
    fn metrics_keep_the_last_success_of_a_stream_that_failed_this_time() {
        let at = |secs| DateTime::from_timestamp(secs, 0).unwrap_or_default();
        let summary = RunSummary {
            started_at: at(1_800_000_000),
            finished_at: at(1_800_000_010),
            exit_code: 4,
            pipelines: vec![PipelineSummary {
                pipeline: "p\"1".into(),
                run_id: Some("r".into()),
                error: None,
                streams: vec![stream("users", "loaded"), stream("leaves", "forbidden")],
            }],
        };
        let previous = "lucca_sync_last_success_timestamp_seconds{pipeline=\"p\\\"1\",stream=\"leaves\"} 1700000000\n";
        let text = prometheus_text(&summary, Some(previous));
        for line in [
            "# TYPE lucca_sync_rows_written gauge",
            "lucca_sync_rows_written{pipeline=\"p\\\"1\",stream=\"users\"} 25",
            "lucca_sync_throttled_responses{pipeline=\"p\\\"1\",stream=\"users\"} 1",
            "lucca_sync_stream_success{pipeline=\"p\\\"1\",stream=\"leaves\"} 0",
            "lucca_sync_last_success_timestamp_seconds{pipeline=\"p\\\"1\",stream=\"leaves\"} 1700000000",
            "lucca_sync_last_success_timestamp_seconds{pipeline=\"p\\\"1\",stream=\"users\"} 1800000010",
            "lucca_sync_run_exit_code 4",
            "lucca_sync_run_duration_seconds 10",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
    }
}
