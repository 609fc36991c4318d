//! The extract stage: reads a stream's pages from a Lucca tenant, paced by
//! the request budget, retrying what is transient, and hands each page's raw
//! records to the transform through a bounded channel.

pub mod budget;
pub mod client;
pub mod paging;
pub mod pool;
pub mod redact;
mod retry;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use reqwest_middleware::ClientWithMiddleware;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use url::Url;

pub use budget::RequestBudget;
pub use client::{KeyRejection, StreamCounters, Timeouts, build_client};
use paging::{NextPage, PageFacts, Pager};
pub use pool::PagePool;
pub use retry::RetrySettings;

use crate::json::RecordTape;
use crate::pipeline::{PageBy, PagingStyle, Secret};

/// The `Api-Version` the newer Lucca API requires.
pub const LUCCA_API_VERSION: &str = "2024-11-01";

/// Everything the extractor needs to read one stream.
#[derive(Debug, Clone)]
pub struct StreamPlan {
    /// Pipeline name, for messages.
    pub pipeline: String,
    /// Stream name, for messages.
    pub stream: String,
    /// The endpoint path as written in the pipeline.
    pub endpoint: String,
    /// Endpoint URL with the stream's parameters, projection and filters,
    /// without paging parameters.
    pub base: Url,
    /// Paging style.
    pub style: PagingStyle,
    /// Keyset or offset, for v3.
    pub page_by: PageBy,
    /// Records per request.
    pub page_size: u32,
    /// Stop after this many records (`run --limit`).
    pub max_records: Option<u64>,
    /// Date windows of a sliced stream, in order: each is one more query
    /// parameter (`date=between,a,b`) on `base`, read to its end before the
    /// next. Empty: the stream is read in one pass.
    pub windows: Vec<(String, String)>,
}

impl StreamPlan {
    /// Builds the endpoint URL: `params`, then the projection in the style's
    /// own syntax (with the total count asked for), then the incremental
    /// filter `{cursor_field}=since,{value}`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        pipeline: &str,
        stream: &str,
        base_url: &Url,
        endpoint: &str,
        params: &std::collections::BTreeMap<String, String>,
        fields_query: &str,
        style: PagingStyle,
        page_by: PageBy,
        page_size: u32,
        since: Option<(&str, &str)>,
    ) -> Result<Self, url::ParseError> {
        let mut base = base_url.join(endpoint)?;
        {
            let mut q = base.query_pairs_mut();
            for (k, v) in params {
                q.append_pair(k, v);
            }
            match style {
                PagingStyle::V3 => {
                    let fields = if fields_query.is_empty() {
                        // What v3 answers without `fields`; `fields` with
                        // the count alone would name no field of a record.
                        "id,name,url,collection.count".to_owned()
                    } else {
                        format!("{fields_query},collection.count")
                    };
                    q.append_pair("fields", &fields);
                }
                PagingStyle::V4 => {
                    if !fields_query.is_empty() {
                        q.append_pair("fields", fields_query);
                    }
                    // `next` names the next page when the endpoint pages
                    // by opaque cursor rather than by page number.
                    q.append_pair("fields.root", "count,next");
                }
                PagingStyle::Cursor => {
                    if !fields_query.is_empty() {
                        q.append_pair("fields", fields_query);
                    }
                    q.append_pair("include", "links,totalCount");
                }
            }
            if let Some((field, value)) = since {
                q.append_pair(field, &format!("since,{value}"));
            }
        }
        Ok(StreamPlan {
            pipeline: pipeline.to_owned(),
            stream: stream.to_owned(),
            endpoint: endpoint.to_owned(),
            base,
            style,
            page_by,
            page_size,
            max_records: None,
            windows: Vec::new(),
        })
    }

    /// The plan asking offset (v3) and page-number (v4) paging to sort by
    /// `id` (`orderBy=id,asc`, `sort=+id`), so that each request cuts the
    /// collection at the same places; not when `params` sorts already.
    /// Keyset and cursor paging order by themselves.
    pub fn sorted_by_id(mut self) -> Self {
        let (name, value) = match (self.style, self.page_by) {
            (PagingStyle::V3, PageBy::Offset) => ("orderBy", "id,asc"),
            (PagingStyle::V4, _) => ("sort", "+id"),
            _ => return self,
        };
        if !self.base.query_pairs().any(|(k, _)| k == name) {
            self.base.query_pairs_mut().append_pair(name, value);
        }
        self
    }

    /// The plan reading one window after the other, each filtered with
    /// `{field}={filter}` (e.g. `date=between,...`).
    pub fn with_windows(mut self, field: &str, filters: Vec<String>) -> Self {
        self.windows = filters.into_iter().map(|f| (field.to_owned(), f)).collect();
        self
    }

    /// The URL of each pass over the endpoint: one per window, or `base`.
    fn passes(&self) -> Vec<Url> {
        if self.windows.is_empty() {
            return vec![self.base.clone()];
        }
        self.windows
            .iter()
            .map(|(field, filter)| {
                let mut url = self.base.clone();
                url.query_pairs_mut().append_pair(field, filter);
                url
            })
            .collect()
    }
}

impl StreamPlan {
    /// The plan capped at `limit` records (`run --limit`): it stops there,
    /// and asks for no bigger pages than that.
    pub fn with_limit(mut self, limit: Option<u64>) -> Self {
        if let Some(limit) = limit {
            self.max_records = Some(limit);
            self.page_size = self
                .page_size
                .min(u32::try_from(limit.max(1)).unwrap_or(u32::MAX));
        }
        self
    }
}

/// One page of records, as the API sent it.
#[derive(Debug)]
pub struct Page {
    /// 1-based page number within the stream.
    pub number: u64,
    /// The URL the page came from (no secret in it).
    pub url: String,
    /// The whole response body (UTF-8, checked when it was read).
    pub body: String,
    /// Where each record and its members sit in `body`.
    pub records: RecordTape,
    /// Where `body` and `records` go back when the page is dropped.
    pool: Option<Arc<PagePool>>,
}

impl Page {
    /// A page read from `body` by [`paging::parse_envelope`].
    pub fn new(number: u64, url: String, body: String, records: RecordTape) -> Self {
        Page {
            number,
            url,
            body,
            records,
            pool: None,
        }
    }

    /// Records on the page.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The JSON text of each record.
    pub fn records(&self) -> impl Iterator<Item = &str> {
        (0..self.records.len()).map(|i| self.records.text(&self.body, i))
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.give(
                std::mem::take(&mut self.body),
                std::mem::take(&mut self.records),
            );
        }
    }
}

/// What the extractor reports once a stream is read.
#[derive(Debug, Clone, Default)]
pub struct ExtractSummary {
    /// Pages read.
    pub pages: u64,
    /// Records read.
    pub records: u64,
    /// The total the API reported on the first page, if any.
    pub api_count: Option<u64>,
}

/// Why a stream could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// 401: the key is invalid or revoked. The whole run stops.
    #[error(
        "stream `{stream}`: {url}: the API key was rejected (401 Unauthorized); check LUCCA_API_KEY or the api_key_file, the key itself is not shown"
    )]
    KeyRejected { stream: String, url: String },
    /// 403: the key's role lacks a right.
    #[error(
        "stream `{stream}`: {url}: 403 Forbidden: the API key's role has no right to read `{endpoint}`{detail}; grant it in Lucca's role settings or remove the stream"
    )]
    Forbidden {
        stream: String,
        url: String,
        endpoint: String,
        detail: String,
    },
    /// Another status that retrying cannot fix (400, 404, 405, ...).
    #[error("stream `{stream}`: {url}: HTTP {status}{detail} (not retried)")]
    Rejected {
        stream: String,
        url: String,
        status: u16,
        detail: String,
    },
    /// Transient failures went on past the retry limits.
    #[error("stream `{stream}`: {url}: page {page} failed after {attempts} attempts: {last}")]
    GaveUp {
        stream: String,
        url: String,
        page: u64,
        attempts: u32,
        last: String,
    },
    /// The server asked to wait longer than the configured cap.
    #[error(
        "stream `{stream}`: {url}: the server asked to wait {asked}s (Retry-After), more than max_retry_after_secs ({cap}s)"
    )]
    RetryAfterTooLong {
        stream: String,
        url: String,
        asked: u64,
        cap: u64,
    },
    /// A 200 whose body is not what the paging style expects.
    #[error("stream `{stream}`: {url}: page {page}: {message}")]
    BadResponse {
        stream: String,
        url: String,
        page: u64,
        message: String,
    },
    /// The run is stopping (another stream's 401, a signal): nothing more is sent.
    #[error("stream `{stream}`: stopped before completion: the run is stopping")]
    Stopped { stream: String },
    /// The client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

impl ExtractError {
    /// True for a 403.
    pub fn is_forbidden(&self) -> bool {
        matches!(self, ExtractError::Forbidden { .. })
    }

    /// The error with `secret` and any credential value removed from the
    /// parts of its message that a server's answer supplied (see
    /// [`redact::redact`]): the last word on every error leaving the
    /// extractor, whatever path built it.
    fn redacted(mut self, secret: &Secret) -> Self {
        let secret = secret.expose();
        match &mut self {
            ExtractError::Forbidden { detail, .. } | ExtractError::Rejected { detail, .. } => {
                *detail = redact::redact(detail, secret);
            }
            ExtractError::GaveUp { last, .. } => *last = redact::redact(last, secret),
            ExtractError::BadResponse { message, .. } => {
                *message = redact::redact(message, secret);
            }
            _ => {}
        }
        self
    }
}

/// A URL as shown in logs and messages: without user info.
pub fn display_url(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.to_string()
}

/// Shared pieces for the streams of one run against one tenant.
#[derive(Clone)]
pub struct Extractor {
    /// The tenant's client (budget and 401 gate inside).
    pub http: ClientWithMiddleware,
    /// Retry limits.
    pub retry: RetrySettings,
    /// Cancelled on 401 or on a signal: no request leaves after that.
    pub stop: CancellationToken,
    /// Buffers of transformed pages, which later pages are read into.
    pub pool: Arc<PagePool>,
    /// The tenant's request budget (also inside `http`), which a
    /// `Retry-After` pauses for every stream.
    pub budget: Arc<RequestBudget>,
    /// The API key the client sends, to redact from any error text a server
    /// sends back (a gateway page may echo the `Authorization` header).
    pub api_key: Secret,
}

impl Extractor {
    /// Asks for the first page of a stream, one record long: proves the URL,
    /// the key and the key's rights with a single request. Returns the count
    /// the API reported.
    pub async fn probe(
        &self,
        plan: &StreamPlan,
        counters: Arc<StreamCounters>,
    ) -> Result<Option<u64>, ExtractError> {
        let mut plan = plan.clone();
        plan.page_size = 1;
        let base = plan
            .passes()
            .into_iter()
            .next()
            .unwrap_or_else(|| plan.base.clone());
        let pager = Pager::new(plan.style, plan.page_by, base, 1);
        let (_, parsed) = retry::fetch_page(self, &plan, &counters, &pager.current_url(), 1)
            .await
            .map_err(|e| e.redacted(&self.api_key))?;
        Ok(parsed.count)
    }

    /// Reads every page of a stream (window after window when it is
    /// sliced) and sends them down `pages`. Returns once the last page is
    /// handed over. The API count is the sum of the windows' counts.
    pub async fn extract_stream(
        &self,
        plan: &StreamPlan,
        counters: Arc<StreamCounters>,
        pages: mpsc::Sender<Page>,
    ) -> Result<ExtractSummary, ExtractError> {
        let mut summary = ExtractSummary::default();
        let mut counted = Some(0u64);
        for base in plan.passes() {
            if plan
                .max_records
                .is_some_and(|max| summary.records >= max && summary.pages > 0)
            {
                break;
            }
            if !plan.windows.is_empty() {
                StreamCounters::bump(&counters.windows_begun);
            }
            let count = self
                .extract_pass(plan, base, &counters, &pages, &mut summary, counted)
                .await
                .map_err(|e| e.redacted(&self.api_key))?;
            counted = counted.zip(count).map(|(a, b)| a + b);
        }
        summary.api_count = counted.filter(|_| summary.pages > 0);
        Ok(summary)
    }

    /// Reads one pass over the endpoint (the whole stream, or one window),
    /// adding to `summary`; returns the pass's API count. `before` is the
    /// count of the passes already read (for the progress counters).
    async fn extract_pass(
        &self,
        plan: &StreamPlan,
        base: Url,
        counters: &Arc<StreamCounters>,
        pages: &mpsc::Sender<Page>,
        summary: &mut ExtractSummary,
        before: Option<u64>,
    ) -> Result<Option<u64>, ExtractError> {
        let mut pager = Pager::new(plan.style, plan.page_by, base, plan.page_size);
        let keyset = plan.style == PagingStyle::V3 && plan.page_by == PageBy::Id;
        let mut url = pager.current_url();
        // The first record of the page before, and whether that page was
        // short of the size asked: a server that ignores paging answers
        // every page with the same records, and without a count nothing
        // else would end the stream.
        let mut previous_first = String::new();
        let mut previous_short = false;
        loop {
            let number = summary.pages + 1;
            let fetch_started = std::time::Instant::now();
            let (body, parsed) = retry::fetch_page(self, plan, counters, &url, number).await?;
            let elapsed_ms = fetch_started.elapsed().as_millis() as u64;
            let shown = display_url(&url);
            let bad_response = |message| ExtractError::BadResponse {
                stream: plan.stream.clone(),
                url: shown.clone(),
                page: number,
                message,
            };
            // Links and cursors have their own loop guard (`Pager::follow`).
            if plan.style != PagingStyle::Cursor
                && parsed.next.is_none()
                && !parsed.records.is_empty()
            {
                let first = parsed.records.text(&body, 0);
                if first == previous_first {
                    if !previous_short {
                        // A full page again: more may be there, out of reach.
                        return Err(bad_response(format!(
                            "the page repeats the page before (the same first record): the endpoint ignores {}; the stream would never end or end short",
                            if keyset {
                                "the `id=greaterthan` filter (set `page_by: offset`)"
                            } else {
                                "the paging parameters"
                            }
                        )));
                    }
                    // The page before held all there is.
                    tracing::info!(
                        pipeline = %plan.pipeline,
                        stream = %plan.stream,
                        page = number,
                        url = %shown,
                        "the page repeats the page before (the endpoint ignores paging): the stream ends here"
                    );
                    return Ok(pager.total());
                }
                previous_first.clear();
                previous_first.push_str(first);
            }
            previous_short = parsed.records.len() < pager.page_size() as usize;
            let ids = if keyset {
                paging::page_ids(&parsed.records, &body).map_err(bad_response)?
            } else {
                None
            };
            let next = pager
                .advance(PageFacts {
                    items: parsed.records.len(),
                    count: parsed.count,
                    ids,
                    next: parsed.next.as_deref(),
                })
                .map_err(bad_response)?;
            let mut records = parsed.records;
            let mut next = next;
            if let Some(max) = plan.max_records {
                let room =
                    usize::try_from(max.saturating_sub(summary.records)).unwrap_or(usize::MAX);
                if records.len() >= room {
                    records.truncate(room);
                    next = NextPage::Done;
                }
            }
            summary.pages = number;
            summary.records += records.len() as u64;
            summary.api_count = before.zip(pager.total()).map(|(a, b)| a + b);
            counters.records.store(summary.records, Ordering::Relaxed);
            counters.pages.store(number, Ordering::Relaxed);
            if let Some(count) = summary.api_count {
                counters
                    .api_count_plus_one
                    .store(count.saturating_add(1), Ordering::Relaxed);
            }
            tracing::debug!(
                pipeline = %plan.pipeline,
                stream = %plan.stream,
                page = number,
                url = %shown,
                status = 200,
                elapsed_ms,
                records = records.len(),
                "page read"
            );
            let mut page = Page::new(number, shown, body, records);
            page.pool = Some(Arc::clone(&self.pool));
            if pages.send(page).await.is_err() {
                // The transform stopped; its own error says why.
                return Err(ExtractError::Stopped {
                    stream: plan.stream.clone(),
                });
            }
            match next {
                NextPage::Fetch(next_url) => url = next_url,
                NextPage::Done => return Ok(pager.total()),
            }
        }
    }
}

/// The value sent as `{cursor_field}=since,{value}`: the stored cursor minus
/// the lookback that covers clock skew between Lucca's servers and ours.
/// Naive datetimes stay naive (Lucca's local time); the result is truncated
/// to the second, which only ever moves it earlier.
pub fn since_value(cursor: &str, lookback: std::time::Duration) -> String {
    use crate::transform::temporal::{Temporal, parse};
    let back = i64::try_from(lookback.as_micros()).unwrap_or(i64::MAX);
    let format = |micros: i64, suffix: &str| {
        chrono::DateTime::from_timestamp_micros(micros.saturating_sub(back))
            .map(|t| format!("{}{suffix}", t.naive_utc().format("%Y-%m-%dT%H:%M:%S")))
    };
    let shifted = match parse(cursor) {
        Some(Temporal::Naive(us)) => format(us, ""),
        Some(Temporal::Zoned(us)) => format(us, "Z"),
        Some(Temporal::Date(days)) => format(i64::from(days) * 86_400_000_000, ""),
        None => None,
    };
    shifted.unwrap_or_else(|| cursor.to_owned())
}

#[cfg(test)]
mod since_tests {
    use super::since_value;
    use std::time::Duration;

    #[test]
    fn lookback_is_subtracted_and_the_format_kept() {
        let five_min = Duration::from_secs(300);
        assert_eq!(
            since_value("2025-01-01T08:45:23.583", five_min),
            "2025-01-01T08:40:23"
        );
        assert_eq!(
            since_value("2025-01-01T00:01:00Z", five_min),
            "2024-12-31T23:56:00Z"
        );
        assert_eq!(since_value("42", five_min), "42");
    }
}
