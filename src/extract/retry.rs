//! Fetching one page with retries: reqwest-retry's exponential backoff with
//! jitter and its retryable classification, plus what it lacks: honouring
//! `Retry-After`, retrying a body that breaks or is not JSON, and bounds on
//! attempts and on the total time spent waiting. A 429 is the tenant's
//! shared budget speaking, not a fault: 429s count against the total wait
//! only, other failures against the attempts too.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest_retry::policies::ExponentialBackoff;
use reqwest_retry::{Jitter, RetryDecision, RetryPolicy, Retryable, RetryableStrategy};
use url::Url;

use super::client::{MaxPause, PausedTooLong, RedirectRefused, StreamCounters};
use super::paging::{EnvelopeError, ParsedPage, parse_envelope};
use super::redact::redact;
use super::{ExtractError, Extractor, LUCCA_API_VERSION, StreamPlan, display_url};
use crate::pipeline::PagingStyle;

/// Attempts of one page, whatever the answers: a bound for 429s whose waits
/// are next to nothing (`Retry-After: 0`), which the total wait cannot bound.
const MAX_ATTEMPTS_EVER: u32 = 1000;

/// Limits on retrying one page.
#[derive(Debug, Clone)]
pub struct RetrySettings {
    /// Attempts per page, the first included, counting the failures other
    /// than 429 (5xx, timeouts, broken bodies); 429s are bounded by
    /// `max_total_wait` (and [`MAX_ATTEMPTS_EVER`]).
    pub max_attempts: u32,
    /// Longest total wait between the attempts of one page.
    pub max_total_wait: Duration,
    /// Longest `Retry-After` accepted.
    pub max_retry_after: Duration,
    /// First backoff interval; doubles on each retry, with jitter.
    pub backoff_min: Duration,
    /// Largest backoff interval.
    pub backoff_max: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            max_attempts: 6,
            max_total_wait: Duration::from_secs(300),
            max_retry_after: Duration::from_secs(120),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
        }
    }
}

impl RetrySettings {
    fn policy(&self) -> ExponentialBackoff {
        ExponentialBackoff::builder()
            .retry_bounds(self.backoff_min, self.backoff_max.max(self.backoff_min))
            .jitter(Jitter::Bounded)
            .base(2)
            .build_with_max_retries(self.max_attempts.saturating_sub(1))
    }

    /// The backoff of a 429 without `Retry-After`: the same intervals, with
    /// no bound on their number (the total wait bounds them).
    fn throttle_policy(&self) -> ExponentialBackoff {
        ExponentialBackoff::builder()
            .retry_bounds(self.backoff_min, self.backoff_max.max(self.backoff_min))
            .jitter(Jitter::Bounded)
            .base(2)
            .build_with_max_retries(u32::MAX)
    }
}

/// Lucca's retry guidance as a reqwest-retry strategy: 408, 429, 500, 502,
/// 503 and 504, timeouts and broken connections are transient; every other
/// status (400, 401, 403, 404, 405, ...) is final.
pub struct LuccaRetryStrategy;

impl RetryableStrategy for LuccaRetryStrategy {
    fn handle(
        &self,
        res: &Result<reqwest::Response, reqwest_middleware::Error>,
    ) -> Option<Retryable> {
        match res {
            Ok(response) => classify_status(response.status()),
            Err(reqwest_middleware::Error::Middleware(_)) => Some(Retryable::Fatal),
            Err(e @ reqwest_middleware::Error::Reqwest(inner)) => {
                if inner.is_redirect() || inner.is_builder() {
                    Some(Retryable::Fatal)
                } else {
                    // Anything else on the wire (connect, timeout, reset,
                    // a response cut short) is worth another attempt.
                    reqwest_retry::default_on_request_failure(e).or(Some(Retryable::Transient))
                }
            }
        }
    }
}

fn classify_status(status: StatusCode) -> Option<Retryable> {
    match status.as_u16() {
        200..=299 => None,
        408 | 429 | 500 | 502 | 503 | 504 => Some(Retryable::Transient),
        _ => Some(Retryable::Fatal),
    }
}

/// Reads `Retry-After`: delay-seconds or an HTTP date; also fractional
/// seconds (`2.5`, not HTTP but seen in the wild), rounded up.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    // Digits and a point only: no sign, exponent, `inf` or `NaN`.
    if value.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && let Ok(secs) = value.parse::<f64>()
    {
        // `as` saturates: an absurd wait stays absurd, and fails the cap.
        return Some(Duration::from_secs(secs.ceil() as u64));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    // The date has a one-second resolution: round up so that we never
    // come back early.
    let wait = when.duration_since(now).unwrap_or(Duration::ZERO);
    let whole = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    Some(Duration::from_secs(whole))
}

/// The outcome of one attempt.
enum Attempt {
    Done(String, ParsedPage),
    Retry {
        reason: String,
        /// The HTTP status, when there was an answer (0: none, or a body
        /// that broke off or is not JSON after a 200).
        status: u16,
        retry_after: Option<Duration>,
    },
    Fail(ExtractError),
}

/// Fetches page `number` at `url`, retrying what is transient.
pub(super) async fn fetch_page(
    extractor: &Extractor,
    plan: &StreamPlan,
    counters: &Arc<StreamCounters>,
    url: &Url,
    number: u64,
) -> Result<(String, ParsedPage), ExtractError> {
    let settings = &extractor.retry;
    let policy = settings.policy();
    let throttle_policy = settings.throttle_policy();
    let started = SystemTime::now();
    let shown = display_url(url);
    let mut waited = Duration::ZERO;
    let mut attempt: u32 = 0;
    // Failed attempts other than 429s, and 429s.
    let mut failures: u32 = 0;
    let mut throttled: u32 = 0;
    loop {
        attempt += 1;
        let outcome = tokio::select! {
            biased;
            () = extractor.stop.cancelled() => {
                return Err(ExtractError::Stopped { stream: plan.stream.clone() });
            }
            outcome = try_once(extractor, plan, counters, url, &shown, number) => outcome,
        };
        let (reason, status, retry_after) = match outcome {
            Attempt::Done(body, page) => return Ok((body, page)),
            Attempt::Fail(e) => return Err(e),
            Attempt::Retry {
                reason,
                status,
                retry_after,
            } => (
                redact(&reason, extractor.api_key.expose()),
                status,
                retry_after,
            ),
        };
        // A page that keeps timing out is often a page too big to build
        // within Lucca's 5 s server timeout (408).
        let hint = if status == 408 {
            " (a page that keeps timing out may be too big: try a smaller page_size)"
        } else if status == 0 && reason.contains("timed out") {
            " (a page that keeps timing out may be too big: try a smaller page_size or a larger request_timeout_secs)"
        } else {
            ""
        };
        let gave_up = |last: String| ExtractError::GaveUp {
            stream: plan.stream.clone(),
            url: shown.clone(),
            page: number,
            attempts: attempt,
            last: format!("{last}{hint}"),
        };
        let throttle = status == 429;
        if throttle {
            throttled += 1;
        } else {
            failures += 1;
        }
        let wait = match retry_after {
            Some(asked) if asked > settings.max_retry_after => {
                // Too long for this run, but the limit is still the
                // tenant's: no other stream may send before it either.
                extractor.budget.pause_for(asked);
                return Err(ExtractError::RetryAfterTooLong {
                    stream: plan.stream.clone(),
                    url: shown.clone(),
                    asked: asked.as_secs(),
                    cap: settings.max_retry_after.as_secs(),
                });
            }
            Some(asked) => {
                // The limit is the tenant's: every stream waits as asked.
                extractor.budget.pause_for(asked);
                asked
            }
            None => {
                let decision = if throttle {
                    throttle_policy.should_retry(started, (throttled - 1).min(30))
                } else {
                    policy.should_retry(started, failures - 1)
                };
                let wait = match decision {
                    RetryDecision::Retry { execute_after } => execute_after
                        .duration_since(SystemTime::now())
                        .unwrap_or(Duration::ZERO),
                    RetryDecision::DoNotRetry => return Err(gave_up(reason)),
                };
                if throttle {
                    // A 429 says the tenant's budget is spent, whichever
                    // stream met it: every stream backs off, not just this one.
                    extractor.budget.pause_for(wait);
                }
                wait
            }
        };
        if (!throttle && failures >= settings.max_attempts) || attempt >= MAX_ATTEMPTS_EVER {
            return Err(gave_up(reason));
        }
        if waited + wait > settings.max_total_wait {
            return Err(gave_up(format!(
                "{reason}; waiting {:.1}s more would pass max_retry_wait_secs ({}s)",
                wait.as_secs_f64(),
                settings.max_total_wait.as_secs()
            )));
        }
        tracing::warn!(
            pipeline = %plan.pipeline,
            stream = %plan.stream,
            page = number,
            url = %shown,
            attempt,
            status,
            elapsed_ms = started.elapsed().unwrap_or_default().as_millis() as u64,
            wait_ms = wait.as_millis() as u64,
            "{reason}; retrying"
        );
        StreamCounters::bump(&counters.retries);
        waited += wait;
        tokio::select! {
            biased;
            () = extractor.stop.cancelled() => {
                return Err(ExtractError::Stopped { stream: plan.stream.clone() });
            }
            () = tokio::time::sleep(wait) => {}
        }
    }
}

async fn try_once(
    extractor: &Extractor,
    plan: &StreamPlan,
    counters: &Arc<StreamCounters>,
    url: &Url,
    shown: &str,
    number: u64,
) -> Attempt {
    let mut request = extractor
        .http
        .get(url.clone())
        .with_extension(Arc::clone(counters))
        .with_extension(MaxPause(extractor.retry.max_retry_after));
    if plan.style == PagingStyle::Cursor {
        request = request.header("Api-Version", LUCCA_API_VERSION);
    }
    let result = request.send().await;
    if let Err(reqwest_middleware::Error::Middleware(e)) = &result {
        // Another stream's Retry-After paused the tenant past our cap.
        if let Some(PausedTooLong { left }) = e.downcast_ref::<PausedTooLong>() {
            return Attempt::Fail(ExtractError::RetryAfterTooLong {
                stream: plan.stream.clone(),
                url: shown.to_owned(),
                asked: left.as_secs() + u64::from(left.subsec_nanos() > 0),
                cap: extractor.retry.max_retry_after.as_secs(),
            });
        }
        if let Some(refused) = e.downcast_ref::<RedirectRefused>() {
            return Attempt::Fail(ExtractError::GaveUp {
                stream: plan.stream.clone(),
                url: shown.to_owned(),
                page: number,
                attempts: 1,
                last: refused.to_string(),
            });
        }
        // Otherwise only the stop gate fails in middleware.
        return Attempt::Fail(ExtractError::Stopped {
            stream: plan.stream.clone(),
        });
    }
    let decision = LuccaRetryStrategy.handle(&result);
    let response = match result {
        Ok(response) => response,
        Err(e) => {
            let reason = error_chain(&e);
            return match decision {
                Some(Retryable::Fatal) => Attempt::Fail(ExtractError::GaveUp {
                    stream: plan.stream.clone(),
                    url: shown.to_owned(),
                    page: number,
                    attempts: 1,
                    last: reason,
                }),
                _ => Attempt::Retry {
                    reason,
                    status: 0,
                    retry_after: None,
                },
            };
        }
    };
    let status = response.status();
    match decision {
        None => {}
        Some(Retryable::Transient) => {
            let retry_after = retry_after(response.headers(), SystemTime::now());
            return Attempt::Retry {
                reason: format!("HTTP {status}"),
                status: status.as_u16(),
                retry_after,
            };
        }
        Some(Retryable::Fatal) => {
            let detail = error_detail(response, extractor.api_key.expose()).await;
            return Attempt::Fail(fatal_status(plan, shown, status, detail));
        }
    }
    let buffers = extractor.pool.take();
    let body = match read_body(response, buffers.body).await {
        Ok(body) => body,
        Err(e) => {
            return Attempt::Retry {
                reason: format!("the response body broke off: {}", error_chain(&e)),
                status: 200,
                retry_after: None,
            };
        }
    };
    // Checked once here: the transform then reads every record as text
    // without checking it again.
    let body = match utf8_text(without_bom(body)) {
        Ok(body) => body,
        Err(e) => {
            return Attempt::Retry {
                reason: format!("the response body is not valid JSON (not UTF-8: {e})"),
                status: 200,
                retry_after: None,
            };
        }
    };
    match parse_envelope(&body, plan.style, buffers.records) {
        Ok(page) => Attempt::Done(body, page),
        Err(EnvelopeError::InvalidJson(e)) => Attempt::Retry {
            reason: format!("the response body is not valid JSON ({e})"),
            status: 200,
            retry_after: None,
        },
        Err(EnvelopeError::Unexpected(message)) => Attempt::Fail(ExtractError::BadResponse {
            stream: plan.stream.clone(),
            url: shown.to_owned(),
            page: number,
            message,
        }),
    }
}

/// `body` without a leading UTF-8 byte order mark: JSON must not start
/// with one (RFC 8259), yet some servers send it, and it is no record's.
fn without_bom(mut body: Vec<u8>) -> Vec<u8> {
    if body.starts_with(b"\xEF\xBB\xBF") {
        body.drain(..3);
    }
    body
}

/// `bytes` as text, checked with SIMD instructions: std's check took 4%
/// of a run's CPU time, most of it on the non-ASCII names of the records.
fn utf8_text(bytes: Vec<u8>) -> Result<String, simdutf8::compat::Utf8Error> {
    simdutf8::compat::from_utf8(&bytes)?;
    // SAFETY: `bytes` was just checked to be UTF-8.
    Ok(unsafe { String::from_utf8_unchecked(bytes) })
}

/// Reads a response body into `body` (an emptied buffer of an earlier
/// page), reserving what `Content-Length` announces, within reason.
async fn read_body(mut response: reqwest::Response, mut body: Vec<u8>) -> reqwest::Result<Vec<u8>> {
    if let Some(announced) = response.content_length() {
        let announced = usize::try_from(announced).unwrap_or(usize::MAX);
        body.reserve(announced.min(64 << 20).saturating_sub(body.len()));
    }
    while let Some(chunk) = response.chunk().await? {
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn fatal_status(
    plan: &StreamPlan,
    shown: &str,
    status: StatusCode,
    detail: String,
) -> ExtractError {
    match status {
        StatusCode::UNAUTHORIZED => ExtractError::KeyRejected {
            stream: plan.stream.clone(),
            url: shown.to_owned(),
        },
        StatusCode::FORBIDDEN => ExtractError::Forbidden {
            stream: plan.stream.clone(),
            url: shown.to_owned(),
            endpoint: plan.endpoint.clone(),
            detail,
        },
        _ => ExtractError::Rejected {
            stream: plan.stream.clone(),
            url: shown.to_owned(),
            status: status.as_u16(),
            detail,
        },
    }
}

/// A short excerpt of an error body (RFC 7807 `title`, `detail` and
/// `errors` when present), with `secret` and any credential value redacted
/// before it is cut short: a gateway's error page may echo the
/// `Authorization` header.
async fn error_detail(response: reqwest::Response, secret: &str) -> String {
    let Ok(body) = response.bytes().await else {
        return String::new();
    };
    let text =
        problem_text(&body).unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_owned());
    if text.is_empty() {
        return String::new();
    }
    let text = redact(&text, secret);
    let mut excerpt: String = text.chars().take(MAX_DETAIL_CHARS).collect();
    if excerpt.len() < text.len() {
        excerpt.push_str("...");
    }
    format!(" ({excerpt})")
}

/// The longest excerpt of an error body in a message.
const MAX_DETAIL_CHARS: usize = 300;

/// The text of a JSON error body: RFC 7807's `title` and `detail`, ASP.NET's
/// `Message`, and the `errors` a problem+json body details (an object of
/// field -> messages, or an array of messages or of objects naming a field
/// and a message), joined with `: `. `None` when the body is not JSON of
/// that shape.
fn problem_text(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Problem {
        title: Option<String>,
        detail: Option<String>,
        #[serde(rename = "Message")]
        message: Option<String>,
        errors: Option<serde_json::Value>,
    }
    let p = serde_json::from_slice::<Problem>(body).ok()?;
    let head = [p.title, p.detail, p.message]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(": ");
    let errors = p
        .errors
        .as_ref()
        .map(|errors| errors_text(errors, &head))
        .unwrap_or_default();
    Some(match (head.is_empty(), errors.is_empty()) {
        (_, true) => head,
        (true, false) => errors,
        (false, false) => format!("{head}: {errors}"),
    })
}

/// The members naming the field of a problem's error entry.
const FIELD_KEYS: [&str; 5] = ["field", "name", "pointer", "propertyName", "parameter"];

/// A problem's `errors`, one `field: message` per entry, `; ` between
/// them; an entry whose message `shown` already holds is left out.
fn errors_text(errors: &serde_json::Value, shown: &str) -> String {
    use serde_json::Value;
    /// Messages of one entry: a string, an array of them, or an object
    /// with a `message` (or `detail`, `reason`).
    fn messages(value: &Value) -> String {
        match value {
            Value::String(s) => s.clone(),
            Value::Array(items) => items.iter().map(messages).collect::<Vec<_>>().join(", "),
            Value::Object(o) => ["message", "detail", "reason", "errorMessage"]
                .iter()
                .find_map(|k| o.get(*k).and_then(Value::as_str))
                .map(str::to_owned)
                .unwrap_or_else(|| {
                    // Nothing but the field's name: no message.
                    let named = o.keys().all(|k| FIELD_KEYS.contains(&k.as_str()));
                    if named {
                        String::new()
                    } else {
                        value.to_string()
                    }
                }),
            Value::Null => String::new(),
            other => other.to_string(),
        }
    }
    let entries: Vec<(Option<&str>, String)> = match errors {
        Value::Object(fields) => fields
            .iter()
            .map(|(field, value)| (Some(field.as_str()), messages(value)))
            .collect(),
        Value::Array(items) => items
            .iter()
            .map(|item| {
                let field = item.as_object().and_then(|o| {
                    FIELD_KEYS
                        .iter()
                        .find_map(|k| o.get(*k).and_then(Value::as_str))
                });
                (field, messages(item))
            })
            .collect(),
        other => vec![(None, messages(other))],
    };
    entries
        .into_iter()
        .filter(|(field, message)| {
            if message.is_empty() {
                field.is_some()
            } else {
                !shown.contains(message.as_str())
            }
        })
        .map(|(field, message)| match field {
            Some(field) if message.is_empty() => field.to_owned(),
            Some(field) => format!("{field}: {message}"),
            None => message,
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// An error and its causes on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn a_body_is_text_only_when_it_is_utf8_and_the_error_says_where_it_breaks() {
        let text = r#"{"name":"Søren 太郎"}"#;
        assert_eq!(
            utf8_text(text.as_bytes().to_vec()).ok().as_deref(),
            Some(text)
        );
        let broken = |bytes: &[u8]| utf8_text(bytes.to_vec()).err().map(|e| e.to_string());
        assert_eq!(
            broken(b"{\"a\":\"\xff\"}").as_deref(),
            Some("invalid utf-8 sequence of 1 bytes from index 6")
        );
        // A body cut inside a character.
        assert_eq!(
            broken(&text.as_bytes()[..18]).as_deref(),
            Some("incomplete utf-8 byte sequence from index 16")
        );
    }

    #[test]
    fn reads_retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(12));
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_str(&later).unwrap_or_else(|e| panic!("{e}")),
        );
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(12)));
        // A date in the past means "now".
        assert_eq!(
            retry_after(&headers, now + Duration::from_secs(60)),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn a_fractional_retry_after_is_seconds_rounded_up() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut headers = HeaderMap::new();
        for (value, secs) in [("2.5", Some(3)), (" 0.2 ", Some(1)), ("3.0", Some(3))] {
            headers.insert(RETRY_AFTER, HeaderValue::from_static(value));
            assert_eq!(
                retry_after(&headers, now),
                secs.map(Duration::from_secs),
                "{value}"
            );
        }
        // Not a wait: ignored, the client's own backoff applies.
        for value in ["-1.5", "NaN", "inf", "1e400", "soon"] {
            headers.insert(RETRY_AFTER, HeaderValue::from_static(value));
            assert_eq!(retry_after(&headers, now), None, "{value}");
        }
    }

    #[test]
    fn a_problem_body_shows_its_errors() {
        let text = |body: &str| problem_text(body.as_bytes());
        // ASP.NET's ValidationProblemDetails: field -> messages.
        assert_eq!(
            text(r#"{"type":"https://tools.ietf.org/html/rfc7231#section-6.5.1","title":"One or more validation errors occurred.","status":400,"errors":{"limit":["The field limit must be between 1 and 100."],"page":["Bad cursor.","Expired."]}}"#).as_deref(),
            Some("One or more validation errors occurred.: limit: The field limit must be between 1 and 100.; page: Bad cursor., Expired.")
        );
        // A list of messages, or of objects naming a field.
        assert_eq!(
            text(r#"{"title":"Bad Request","errors":[{"field":"limit","message":"too big"},"other",{"code":7},{"name":"fields"}]}"#).as_deref(),
            Some(r#"Bad Request: limit: too big; other; {"code":7}; fields"#)
        );
        assert_eq!(
            text(r#"{"title":"Bad Request","detail":"d","errors":null}"#).as_deref(),
            Some("Bad Request: d")
        );
        // What the detail says already is not repeated.
        assert_eq!(
            text(r#"{"title":"Bad Request","detail":"limit must be <= 100","errors":[{"name":"limit","reason":"limit must be <= 100"},{"name":"page","reason":"expired"}]}"#).as_deref(),
            Some("Bad Request: limit must be <= 100: page: expired")
        );
        assert_eq!(text("<html>oops</html>"), None);
    }

    #[test]
    fn lucca_statuses() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(matches!(
                classify_status(StatusCode::from_u16(s).unwrap_or_default()),
                Some(Retryable::Transient)
            ));
        }
        for s in [400, 401, 403, 404, 405] {
            assert!(matches!(
                classify_status(StatusCode::from_u16(s).unwrap_or_default()),
                Some(Retryable::Fatal)
            ));
        }
    }
}
