//! The HTTP side of the fake tenant: one axum fallback handler that numbers
//! and logs each request, applies the configured faults in their documented
//! order, routes to the endpoints and shapes the bytes on the wire (including
//! broken bodies and dropped connections).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use axum::serve::ListenerExt;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::catalog_data::{self, Api, Derived, Served};
use super::data::{MS_PER_DAY, Meta, NO_DATE, Store, fmt_ms};
use super::query::{Params, Proj, V3_MAX_LIMIT, V3_MAX_LIMIT_OTHERS, V3Query, parse_fields};
use super::render::{Projected, Renderer};
use super::{Envelope, Faults, RequestRecord, SandboxConfig};

/// The `Api-Version` the `/lucca-api` endpoints require.
const API_VERSION: &str = "2024-11-01";
const V4_MAX_LIMIT: usize = 100;
const CURSOR_DEFAULT_LIMIT: usize = 25;
const CURSOR_MAX_LIMIT: usize = 100;
const RATE_WINDOW: Duration = Duration::from_secs(60);
/// How long a `stall_on` request waits before its answer.
const STALL: Duration = Duration::from_secs(30);

/// A running fake tenant. Dropping it stops the server abruptly; prefer
/// [`Sandbox::shutdown`].
pub struct Sandbox {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").field("addr", &self.addr).finish()
    }
}

impl Sandbox {
    /// Starts a tenant on `127.0.0.1` on a random free port.
    pub async fn start(config: SandboxConfig) -> io::Result<Sandbox> {
        Self::start_on(config, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts a tenant on `addr` (port 0 picks a free port).
    pub async fn start_on(config: SandboxConfig, addr: SocketAddr) -> io::Result<Sandbox> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(config, addr).await?);
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::trace!("sandbox: cannot set TCP_NODELAY: {e}");
            }
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        tracing::debug!(%addr, "sandbox listening");
        Ok(Sandbox {
            addr,
            shared,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The answered requests, in arrival order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        let mut log = lock(&self.shared.log).clone();
        log.sort_by_key(|r| r.n);
        log
    }

    /// How many requests have arrived so far (answered or not).
    pub fn request_count(&self) -> u32 {
        self.shared.next.load(Ordering::SeqCst)
    }

    /// Ids of the users currently in the tenant, ascending (after any
    /// mutation); former employees only when `include_former`.
    pub fn user_ids(&self, include_former: bool) -> Vec<u32> {
        self.shared
            .read_store()
            .users
            .metas
            .iter()
            .filter(|m| include_former || !m.former)
            .map(|m| m.id)
            .collect()
    }

    /// Stops accepting connections, lets in-flight requests finish (at most
    /// 5 s), then returns.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Runs a tenant on `addr` until `signal` completes, then shuts it down.
/// The listening URL is logged (`tracing`, info level).
pub async fn serve_until(
    config: SandboxConfig,
    addr: SocketAddr,
    signal: impl Future<Output = ()>,
) -> io::Result<()> {
    let sandbox = Sandbox::start_on(config, addr).await?;
    tracing::info!(url = %sandbox.base_url(), "sandbox serving");
    signal.await;
    sandbox.shutdown().await;
    Ok(())
}

/// Runs a tenant on `addr` until Ctrl-C.
pub async fn serve_forever(config: SandboxConfig, addr: SocketAddr) -> io::Result<()> {
    serve_until(config, addr, async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!("sandbox: cannot listen for Ctrl-C ({e}); serving until killed");
            std::future::pending::<()>().await;
        }
    })
    .await
}

/// State shared by every request.
struct Shared {
    api_key: String,
    faults: Faults,
    envelope: Envelope,
    store: RwLock<Store>,
    log: Mutex<Vec<RequestRecord>>,
    next: AtomicU32,
    started: Instant,
    window: Mutex<VecDeque<Instant>>,
    mutated: AtomicBool,
    local: SocketAddr,
    /// `cache_pages`: 200 answers by URL.
    page_cache: Option<Mutex<HashMap<String, Answer>>>,
    /// Day the server started (days since 1970), for derived data.
    today: i64,
    /// The catalog endpoints' data, built on first use from the initial users.
    derived: OnceLock<Derived>,
    /// `SandboxConfig::time_entries`.
    time_entries: Option<u32>,
}

/// Which v3 collection a list or a record comes from.
#[derive(Clone, Copy)]
enum Kind<'a> {
    Users,
    Departments,
    Derived(&'a Served),
}

/// The owner filters the leaves endpoint accepts (Lucca requires one).
const LEAVE_OWNER_FILTERS: [&str; 2] = ["leavePeriod.ownerId", "leavePeriod.owner.departmentId"];

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Naive "now" in milliseconds since 1970 (UTC wall clock).
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Shared {
    async fn new(config: SandboxConfig, local: SocketAddr) -> io::Result<Shared> {
        let users = config.users;
        let today = now_ms().div_euclid(MS_PER_DAY);
        // A million synthetic users take a moment: keep the runtime free.
        let store = tokio::task::spawn_blocking(move || Store::build(&users, today))
            .await
            .map_err(io::Error::other)??;
        Ok(Shared {
            api_key: config.api_key,
            faults: config.faults,
            envelope: config.envelope,
            store: RwLock::new(store),
            log: Mutex::new(Vec::new()),
            next: AtomicU32::new(0),
            started: Instant::now(),
            window: Mutex::new(VecDeque::new()),
            mutated: AtomicBool::new(false),
            local,
            page_cache: config.cache_pages.then(|| Mutex::new(HashMap::new())),
            today,
            derived: OnceLock::new(),
            time_entries: config.time_entries,
        })
    }

    fn read_store(&self) -> RwLockReadGuard<'_, Store> {
        self.store.read().unwrap_or_else(|e| e.into_inner())
    }

    fn derived(&self) -> &Derived {
        self.derived
            .get_or_init(|| catalog_data::build(&self.read_store(), self.today, self.time_entries))
    }

    /// Decides the answer of request `n` (see the module docs for the order).
    fn decide(&self, n: u32, now: Instant, parts: &Parts) -> (Outcome, u16) {
        let f = &self.faults;
        if let Some((k, mutation)) = &f.mutate_after
            && n > *k
            && !self.mutated.swap(true, Ordering::SeqCst)
        {
            let mut store = self.store.write().unwrap_or_else(|e| e.into_inner());
            store.apply(mutation, now_ms());
        }
        if f.reset_on.contains(&n) {
            return (Outcome::Reset, 0);
        }
        let path = parts.uri.path();
        let style = if path.starts_with("/lucca-api/") {
            Style::Problem
        } else {
            Style::Legacy
        };
        if f.unauthorized_after.is_some_and(|k| n > k) || !self.authorized(parts, style) {
            let a = problem(
                style,
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "missing, invalid or revoked API key",
                json!([]),
            );
            return (Outcome::Answer(a), 401);
        }
        if let Some(limit) = f.rate_limit_per_minute
            && let Some(wait) = self.throttle(limit, now)
        {
            let mut a = problem(
                style,
                StatusCode::TOO_MANY_REQUESTS,
                "Too Many Requests",
                &format!("more than {limit} requests per minute"),
                json!([]),
            );
            a.headers
                .push((header::RETRY_AFTER, self.retry_after(wait)));
            return (Outcome::Answer(a), 429);
        }
        if f.forbidden_paths.iter().any(|p| p == path) {
            let right = format!("read access to {path}");
            let a = problem_with(
                style,
                StatusCode::FORBIDDEN,
                "Forbidden",
                &format!("the API key's role lacks the right: {right}"),
                json!([{"right": right}]),
                Some(("missingRight", Value::String(right.clone()))),
            );
            return (Outcome::Answer(a), 403);
        }
        let every = f
            .status_every
            .filter(|(_, k)| *k > 0 && n.is_multiple_of(*k))
            .map(|(status, _)| status);
        let on = f.status_on.iter().find(|(m, _)| *m == n).map(|(_, s)| *s);
        if let Some(status) = on.or(every) {
            let mut answer = status_fault(status, style);
            if matches!(status, 503 | 429) {
                let wait = match &f.fault_retry_after {
                    None => Some(self.retry_after(Duration::from_secs(1))),
                    Some(text) if text.is_empty() => None,
                    Some(text) => Some(text.clone()),
                };
                if let Some(wait) = wait {
                    answer.headers.push((header::RETRY_AFTER, wait));
                }
            }
            return (Outcome::Answer(answer), status);
        }
        let answer = self.route_cached(n, parts);
        let status = answer.status.as_u16();
        if status == 200 && f.truncate_body_on.contains(&n) {
            return (Outcome::Truncated(answer), 200);
        }
        if status == 200 && f.invalid_json_on.contains(&n) {
            let body = b"<!DOCTYPE html><html><head><title>Maintenance</title></head>\
                <body><h1>Lucca is under maintenance</h1></body></html>"
                .to_vec();
            return (
                Outcome::Answer(Answer::new(StatusCode::OK, "application/json", body)),
                200,
            );
        }
        if status == 200 && f.bom_on.contains(&n) {
            let mut answer = answer;
            answer.body.splice(0..0, *b"\xEF\xBB\xBF");
            return (Outcome::Answer(answer), 200);
        }
        (Outcome::Answer(answer), status)
    }

    /// [`Shared::route`], or the bytes it gave this URL before
    /// (`cache_pages`).
    fn route_cached(&self, n: u32, parts: &Parts) -> Answer {
        let Some(cache) = &self.page_cache else {
            return self.route(n, parts);
        };
        let key = parts.uri.to_string();
        if let Some(answer) = lock(cache).get(&key) {
            return answer.clone();
        }
        let answer = self.route(n, parts);
        if answer.status == StatusCode::OK {
            lock(cache).insert(key, answer.clone());
        }
        answer
    }

    fn authorized(&self, parts: &Parts, style: Style) -> bool {
        let Some(value) = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let Some((scheme, rest)) = value.trim().split_once(' ') else {
            return false;
        };
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("lucca") {
            rest.strip_prefix("application=")
                .is_some_and(|key| key == self.api_key)
        } else {
            style == Style::Problem && scheme.eq_ignore_ascii_case("bearer") && rest == self.api_key
        }
    }

    /// `None` when the request is admitted, else how long until a slot frees.
    fn throttle(&self, limit: u32, now: Instant) -> Option<Duration> {
        let mut window = lock(&self.window);
        while window
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= RATE_WINDOW)
        {
            window.pop_front();
        }
        if window.len() < limit as usize {
            window.push_back(now);
            return None;
        }
        let oldest = window.front().copied().unwrap_or(now);
        Some((oldest + RATE_WINDOW).saturating_duration_since(now))
    }

    fn retry_after(&self, wait: Duration) -> String {
        let secs = wait.as_millis().div_ceil(1000).max(1) as u64;
        if self.faults.retry_after_http_date {
            // Round the instant itself up to a whole second: HTTP dates have
            // no fraction, and rounding down would name a time too early.
            let target_ms = u64::try_from(now_ms()).unwrap_or(0) + wait.as_millis() as u64;
            let target = UNIX_EPOCH + Duration::from_secs(target_ms.div_ceil(1000).max(1));
            httpdate::fmt_http_date(target)
        } else {
            secs.to_string()
        }
    }

    fn base_url(&self, parts: &Parts) -> String {
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .filter(|h| {
                !h.is_empty()
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
            });
        match host {
            Some(h) => format!("http://{h}"),
            None => format!("http://{}", self.local),
        }
    }

    fn route(&self, n: u32, parts: &Parts) -> Answer {
        let path = parts.uri.path();
        let style = if path.starts_with("/lucca-api/") {
            Style::Problem
        } else {
            Style::Legacy
        };
        if parts.method != Method::GET {
            let mut a = problem(
                style,
                StatusCode::METHOD_NOT_ALLOWED,
                "Method Not Allowed",
                "the sandbox only serves GET",
                json!([]),
            );
            a.headers.push((header::ALLOW, "GET".to_owned()));
            return a;
        }
        let trimmed = path.trim_end_matches('/');
        let params = Params::parse(parts.uri.query().unwrap_or(""));
        let base = self.base_url(parts);
        match trimmed {
            "/api/v3/users" => self.v3_list(Kind::Users, &params, &base, n, parts),
            "/api/v3/departments" => self.v3_list(Kind::Departments, &params, &base, n, parts),
            "/organization/structure/api/establishments" => {
                let total = self.read_store().establishments as usize;
                self.v4_list(&params, &base, path, total, |i| {
                    establishment(u32::try_from(i + 1).unwrap_or(u32::MAX))
                })
            }
            "/lucca-api/employees" => self.employees(parts, &params, &base),
            _ => {
                if let Some(id) = trimmed.strip_prefix("/api/v3/users/") {
                    self.v3_one(Kind::Users, id, &params, &base, n, parts)
                } else if let Some(id) = trimmed.strip_prefix("/api/v3/departments/") {
                    self.v3_one(Kind::Departments, id, &params, &base, n, parts)
                } else if let Some(served) = self.derived().at(trimmed) {
                    self.derived_list(served, &params, &base, n, parts)
                } else {
                    not_found(style, path)
                }
            }
        }
    }

    fn open_envelope(&self, out: &mut Vec<u8>, n: u32, parts: &Parts) {
        match self.envelope {
            Envelope::DataItems => out.extend_from_slice(b"{\"data\":"),
            Envelope::RootItems => {}
            Envelope::WithHeader => {
                let header = json!({
                    "generated": fmt_ms(now_ms()),
                    "principal": "lucca-sync sandbox API key",
                    "processId": n,
                    "request": parts.uri.to_string(),
                    "expires": Value::Null,
                });
                out.extend_from_slice(b"{\"header\":");
                out.extend_from_slice(header.to_string().as_bytes());
                out.extend_from_slice(b",\"data\":");
            }
        }
    }

    fn close_envelope(&self, out: &mut Vec<u8>) {
        match self.envelope {
            Envelope::DataItems | Envelope::WithHeader => out.push(b'}'),
            Envelope::RootItems => {}
        }
    }

    /// A catalog endpoint: v3 or v4 over its derived records. Leaves answer
    /// 400 without a `date` filter or an owner filter, as Lucca does.
    fn derived_list(
        &self,
        served: &Served,
        params: &Params,
        base: &str,
        n: u32,
        parts: &Parts,
    ) -> Answer {
        if served.path == "/api/v3/leaves" {
            let has = |name: &str| params.get(name).is_some_and(|v| !v.trim().is_empty());
            if !has("date") {
                return bad_request(
                    Style::Legacy,
                    "leaves: a date filter is required (e.g. date=between,2025-01-01,2025-01-31)",
                    json!([{"name": "date", "reason": "required"}]),
                );
            }
            if !LEAVE_OWNER_FILTERS.iter().any(|f| has(f)) {
                return bad_request(
                    Style::Legacy,
                    "leaves: an owner filter is required (leavePeriod.ownerId or \
                     leavePeriod.owner.departmentId)",
                    json!([{"name": "leavePeriod.ownerId", "reason": "required"}]),
                );
            }
        }
        match served.api {
            Api::V3 => self.v3_list(Kind::Derived(served), params, base, n, parts),
            Api::V4 => {
                let coll = &served.coll;
                self.v4_list(params, base, parts.uri.path(), coll.metas.len(), |i| {
                    coll.metas
                        .get(i)
                        .and_then(|m| coll.records.get(m.fixture as usize))
                        .map_or(Value::Null, |r| Value::Object(r.clone()))
                })
            }
        }
    }

    fn v3_list(&self, kind: Kind, params: &Params, base: &str, n: u32, parts: &Parts) -> Answer {
        let filterable: &[&str] = match kind {
            Kind::Derived(served) => served.filterable,
            _ => &[],
        };
        let max_limit = match kind {
            Kind::Users => V3_MAX_LIMIT,
            _ => V3_MAX_LIMIT_OTHERS,
        };
        let mut q = match V3Query::parse(params, filterable, max_limit) {
            Ok(q) => q,
            Err(msg) => return bad_request(Style::Legacy, &msg, json!([])),
        };
        if let Some(cap) = self.faults.page_cap {
            q.limit = q.limit.min(cap);
        }
        let store = self.read_store();
        let coll = match kind {
            Kind::Users => &store.users,
            Kind::Departments => &store.departments,
            Kind::Derived(served) => &served.coll,
        };
        let (page, count) = q.select(coll, matches!(kind, Kind::Users));
        let mut out = Vec::with_capacity(128 + page.len() * 512);
        self.open_envelope(&mut out, n, parts);
        out.push(b'{');
        if let Some(proj) = &q.fields.items {
            out.extend_from_slice(b"\"items\":[");
            let renderer = Renderer::new(&store.generator, coll, proj, base);
            for (i, meta) in page.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                if let Err(e) = renderer.write(&mut out, meta) {
                    return internal_error(&e.to_string());
                }
            }
            out.push(b']');
        }
        let count = count
            .filter(|_| !self.faults.no_count)
            .map(|c| c.saturating_sub(self.faults.count_shortfall));
        if let Some(count) = count {
            if q.fields.items.is_some() {
                out.push(b',');
            }
            out.extend_from_slice(format!("\"count\":{count}").as_bytes());
        }
        out.push(b'}');
        self.close_envelope(&mut out);
        Answer::new(StatusCode::OK, "application/json; charset=utf-8", out)
    }

    fn v3_one(
        &self,
        kind: Kind,
        id: &str,
        params: &Params,
        base: &str,
        n: u32,
        parts: &Parts,
    ) -> Answer {
        let proj = match params.get("fields").map(str::trim) {
            None | Some("") => Proj::default_v3(),
            Some(raw) => match parse_fields(raw) {
                Ok(spec) => spec.items.unwrap_or_else(Proj::default_v3),
                Err(msg) => return bad_request(Style::Legacy, &msg, json!([])),
            },
        };
        let store = self.read_store();
        let coll = match kind {
            Kind::Users => &store.users,
            Kind::Departments => &store.departments,
            Kind::Derived(served) => &served.coll,
        };
        let Some(meta) = id.parse::<u32>().ok().and_then(|id| coll.get(id)) else {
            return not_found(Style::Legacy, parts.uri.path());
        };
        let mut out = Vec::with_capacity(1024);
        let envelope = if self.envelope == Envelope::WithHeader {
            Envelope::WithHeader
        } else {
            Envelope::DataItems
        };
        if envelope == Envelope::WithHeader {
            self.open_envelope(&mut out, n, parts);
        } else {
            out.extend_from_slice(b"{\"data\":");
        }
        if let Err(e) = Renderer::new(&store.generator, coll, &proj, base).write(&mut out, meta) {
            return internal_error(&e.to_string());
        }
        out.push(b'}');
        Answer::new(StatusCode::OK, "application/json; charset=utf-8", out)
    }

    /// A Legacy v4 list of `total` records, record `i` (0-based, by id) from
    /// `item`: `limit`/`page`, `sort=+id|-id`, `fields.root`, and the
    /// `fields` projection when asked.
    fn v4_list(
        &self,
        params: &Params,
        base: &str,
        path: &str,
        total: usize,
        item: impl Fn(usize) -> Value,
    ) -> Answer {
        let proj = match params.get("fields").map(str::trim) {
            None | Some("") => None,
            Some(raw) => match parse_fields(raw) {
                Ok(spec) => spec.items,
                Err(msg) => return bad_request(Style::Legacy, &msg, json!([{"name": "fields"}])),
            },
        };
        let limit = match parse_limit(params, 10, V4_MAX_LIMIT) {
            Ok(l) => self.faults.page_cap.map_or(l, |cap| l.min(cap)),
            Err(msg) => return bad_request(Style::Legacy, &msg, json!([{"name": "limit"}])),
        };
        let page = match params.get("page").map(str::trim) {
            None => 1,
            Some(raw) => match raw.parse::<usize>() {
                Ok(p) if p >= 1 => p,
                _ => {
                    return bad_request(
                        Style::Legacy,
                        &format!("page: expected a page number starting at 1, got {raw:?}"),
                        json!([{"name": "page"}]),
                    );
                }
            },
        };
        let desc = match params.get("sort").map(str::trim) {
            None | Some("") | Some("id") | Some("+id") => false,
            Some("-id") => true,
            Some(other) => {
                return bad_request(
                    Style::Legacy,
                    &format!("sort: the sandbox only sorts by id, not {other:?}"),
                    json!([{"name": "sort"}]),
                );
            }
        };
        let root: BTreeSet<String> = params
            .all("fields.root")
            .flat_map(|v| v.split(','))
            .map(|s| s.trim().to_ascii_lowercase())
            .collect();
        let start = (page - 1).saturating_mul(limit);
        let end = start.saturating_add(limit).min(total);
        let project = |v: Value| match &proj {
            None => v,
            Some(proj) => serde_json::to_value(Projected {
                value: &v,
                proj,
                base,
                is_url: false,
            })
            .unwrap_or(Value::Null),
        };
        let items: Vec<Value> = (start..end.max(start))
            .map(|i| if desc { total - 1 - i } else { i })
            .map(|i| project(item(i)))
            .collect();
        let mut body = Map::new();
        body.insert("items".to_owned(), Value::Array(items));
        if root.contains("count") && !self.faults.no_count {
            let count = total.saturating_sub(self.faults.count_shortfall);
            body.insert("count".to_owned(), json!(count));
        }
        let link = |p: usize| {
            Value::String(if !self.faults.bare_next_links {
                page_url(base, path, params, "page", &p.to_string())
            } else if page % 2 == 1 {
                format!("?limit={limit}&page={p}")
            } else {
                format!("{base}{path}?limit={limit}&page={p}")
            })
        };
        if root.contains("prev") {
            let prev = if page > 1 {
                link(page - 1)
            } else {
                Value::Null
            };
            body.insert("prev".to_owned(), prev);
        }
        if root.contains("next") {
            let next = if end < total {
                link(page + 1)
            } else {
                Value::Null
            };
            body.insert("next".to_owned(), next);
        }
        json_answer(
            StatusCode::OK,
            "application/json; charset=utf-8",
            &Value::Object(body),
        )
    }

    fn employees(&self, parts: &Parts, params: &Params, base: &str) -> Answer {
        let version = parts
            .headers
            .get("api-version")
            .and_then(|v| v.to_str().ok())
            .map(str::trim);
        if version != Some(API_VERSION) {
            return bad_request(
                Style::Problem,
                &format!("the Api-Version header must be {API_VERSION}"),
                json!([{"name": "Api-Version", "reason": "missing or unsupported"}]),
            );
        }
        let limit = match parse_limit(params, CURSOR_DEFAULT_LIMIT, CURSOR_MAX_LIMIT) {
            Ok(l) => l,
            Err(msg) => {
                return bad_request(
                    Style::Problem,
                    &msg,
                    json!([{"name": "limit", "reason": msg}]),
                );
            }
        };
        let cursor = match params.get("page").map(Cursor::decode) {
            None => None,
            Some(Some(c)) => Some(c),
            Some(None) => {
                return bad_request(
                    Style::Problem,
                    "page: invalid cursor",
                    json!([{"name": "page", "reason": "invalid cursor"}]),
                );
            }
        };
        let include: BTreeSet<String> = params
            .all("include")
            .flat_map(|v| v.split(','))
            .map(|s| s.trim().to_ascii_lowercase())
            .collect();
        let store = self.read_store();
        let metas = &store.users.metas;
        let len = metas.len();
        let (start, end) = match cursor {
            None => (0, limit.min(len)),
            Some(Cursor::After(x)) => {
                let s = metas.partition_point(|m| m.id <= x);
                (s, s.saturating_add(limit).min(len))
            }
            Some(Cursor::Before(x)) => {
                let e = metas.partition_point(|m| m.id < x);
                (e.saturating_sub(limit), e)
            }
        };
        let page = metas.get(start..end).unwrap_or_default();
        let items: Vec<Value> = page.iter().map(|m| employee(&store, m, base)).collect();
        let path = parts.uri.path();
        let mut self_url = format!("{base}{path}");
        if let Some(q) = parts.uri.query() {
            self_url.push('?');
            self_url.push_str(q);
        }
        let mut body = Map::new();
        body.insert("url".to_owned(), Value::String(self_url));
        body.insert("type".to_owned(), Value::String("employees".to_owned()));
        body.insert("items".to_owned(), Value::Array(items));
        if include.contains("totalcount") {
            body.insert("totalCount".to_owned(), json!(len));
        }
        if include.contains("links") {
            let href =
                |c: Cursor| json!({"href": page_url(base, path, params, "page", &c.encode())});
            let prev = match page.first() {
                Some(first) if start > 0 => href(Cursor::Before(first.id)),
                _ => Value::Null,
            };
            let next = match page.last() {
                Some(last) if end < len => href(Cursor::After(last.id)),
                _ => Value::Null,
            };
            body.insert("links".to_owned(), json!({"prev": prev, "next": next}));
        }
        json_answer(
            StatusCode::OK,
            "application/json; charset=utf-8",
            &Value::Object(body),
        )
    }
}

/// An opaque `/lucca-api` cursor: the hex of `after:{id}` or `before:{id}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cursor {
    After(u32),
    Before(u32),
}

impl Cursor {
    fn encode(self) -> String {
        let plain = match self {
            Cursor::After(id) => format!("after:{id}"),
            Cursor::Before(id) => format!("before:{id}"),
        };
        plain.bytes().map(|b| format!("{b:02x}")).collect()
    }

    fn decode(raw: &str) -> Option<Cursor> {
        let raw = raw.trim();
        if !raw.len().is_multiple_of(2) || !raw.is_ascii() {
            return None;
        }
        let bytes = (0..raw.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(raw.get(i..i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        let plain = String::from_utf8(bytes).ok()?;
        let (kind, id) = plain.split_once(':')?;
        let id = id.parse().ok()?;
        match kind {
            "after" => Some(Cursor::After(id)),
            "before" => Some(Cursor::Before(id)),
            _ => None,
        }
    }
}

/// `limit`: default `default`, between 1 and `max`.
fn parse_limit(params: &Params, default: usize, max: usize) -> Result<usize, String> {
    match params.get("limit").map(str::trim) {
        None => Ok(default),
        Some(raw) => match raw.parse::<usize>() {
            Ok(l) if (1..=max).contains(&l) => Ok(l),
            Ok(l) => Err(format!("limit: {l} is outside 1..={max}")),
            Err(_) => Err(format!("limit: invalid number {raw:?}")),
        },
    }
}

/// The absolute URL of `path` with the same query but `key=value`.
fn page_url(base: &str, path: &str, params: &Params, key: &str, value: &str) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in &params.0 {
        if !k.eq_ignore_ascii_case(key) {
            q.append_pair(k, v);
        }
    }
    q.append_pair(key, value);
    format!("{base}{path}?{}", q.finish())
}

const FR_CITIES: [&str; 8] = [
    "Paris",
    "Lyon",
    "Nantes",
    "Bordeaux",
    "Lille",
    "Marseille",
    "Toulouse",
    "Strasbourg",
];
const CH_CITIES: [&str; 4] = ["Genève", "Lausanne", "Zürich", "Bâle"];

/// Establishment `id`: odd ids belong to legal unit 1 (France), even ids to
/// legal unit 2 (Switzerland), the legal entities users reference.
fn establishment(id: u32) -> Value {
    let legal_unit = 1 + (id.saturating_sub(1)) % 2;
    let (cities, tz): (&[&str], &str) = if legal_unit == 1 {
        (&FR_CITIES, "Europe/Paris")
    } else {
        (&CH_CITIES, "Europe/Zurich")
    };
    let k = (id.saturating_sub(1) / 2) as usize;
    let city = cities[k % cities.len()];
    let round = k / cities.len();
    let name = if round == 0 {
        format!("Établissement {city}")
    } else {
        format!("Établissement {city} {}", round + 1)
    };
    json!({
        "id": id,
        "name": name,
        "code": format!("ET{id:04}"),
        "legalUnitId": legal_unit,
        "timeZoneId": tz,
        "isArchived": id.is_multiple_of(13),
        "createdAt": "2019-01-07T09:00:00",
    })
}

/// A user as the newer Lucca API shapes it.
fn employee(store: &Store, meta: &Meta, base: &str) -> Value {
    let r = store.user_record(meta);
    let reference = |kind: &str, coll: &str, v: Option<&Value>| match v.and_then(Value::as_u64) {
        Some(x) => json!({
            "id": x.to_string(),
            "type": kind,
            "url": format!("{base}/lucca-api/{coll}/{x}"),
        }),
        None => Value::Null,
    };
    let date = |key: &str| {
        r.get(key)
            .and_then(Value::as_str)
            .and_then(|s| s.get(..10))
            .map_or(Value::Null, |d| Value::String(d.to_owned()))
    };
    let updated = if meta.modified_ms == NO_DATE {
        Value::Null
    } else {
        Value::String(format!("{}Z", fmt_ms(meta.modified_ms)))
    };
    json!({
        "id": meta.id.to_string(),
        "type": "employee",
        "url": format!("{base}/lucca-api/employees/{}", meta.id),
        "givenName": r.get("firstName"),
        "familyName": r.get("lastName"),
        "email": r.get("mail"),
        "employeeNumber": r.get("employeeNumber"),
        "employmentStatus": if meta.former { "former" } else { "active" },
        "department": reference("department", "departments", r.get("departmentId")),
        "manager": reference("employee", "employees", r.get("managerId")),
        "hiredOn": date("dtContractStart"),
        "terminatedOn": date("dtContractEnd"),
        "lastUpdatedAt": updated,
    })
}

/// Error body style: Legacy endpoints answer `application/json`, the
/// `/lucca-api` ones `application/problem+json`; both RFC 7807-shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    Legacy,
    Problem,
}

/// A complete answer before it goes on the wire.
#[derive(Clone)]
struct Answer {
    status: StatusCode,
    content_type: &'static str,
    body: Vec<u8>,
    headers: Vec<(HeaderName, String)>,
}

impl Answer {
    fn new(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Answer {
        Answer {
            status,
            content_type,
            body,
            headers: Vec::new(),
        }
    }

    fn into_response(self, body: Body, content_length: Option<usize>) -> Response {
        let mut resp = Response::new(body);
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        if let Some(len) = content_length {
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(name, v);
            }
        }
        resp
    }
}

fn problem(style: Style, status: StatusCode, title: &str, detail: &str, errors: Value) -> Answer {
    problem_with(style, status, title, detail, errors, None)
}

/// An RFC 7807-shaped error body, with one optional extra member.
fn problem_with(
    style: Style,
    status: StatusCode,
    title: &str,
    detail: &str,
    errors: Value,
    extra: Option<(&str, Value)>,
) -> Answer {
    let mut map = Map::new();
    map.insert(
        "type".to_owned(),
        Value::String(format!("https://httpstatuses.io/{}", status.as_u16())),
    );
    map.insert("title".to_owned(), Value::String(title.to_owned()));
    map.insert("status".to_owned(), json!(status.as_u16()));
    map.insert("detail".to_owned(), Value::String(detail.to_owned()));
    map.insert("errors".to_owned(), errors);
    if let Some((k, v)) = extra {
        map.insert(k.to_owned(), v);
    }
    let content_type = match style {
        Style::Legacy => "application/json; charset=utf-8",
        Style::Problem => "application/problem+json",
    };
    Answer::new(
        status,
        content_type,
        Value::Object(map).to_string().into_bytes(),
    )
}

fn bad_request(style: Style, detail: &str, errors: Value) -> Answer {
    problem(
        style,
        StatusCode::BAD_REQUEST,
        "Bad Request",
        detail,
        errors,
    )
}

fn not_found(style: Style, path: &str) -> Answer {
    problem(
        style,
        StatusCode::NOT_FOUND,
        "Not Found",
        &format!("no resource at {path}"),
        json!([]),
    )
}

fn internal_error(detail: &str) -> Answer {
    problem(
        Style::Legacy,
        StatusCode::INTERNAL_SERVER_ERROR,
        "Internal Server Error",
        detail,
        json!([]),
    )
}

fn json_answer(status: StatusCode, content_type: &'static str, v: &Value) -> Answer {
    Answer::new(status, content_type, v.to_string().into_bytes())
}

/// The answer of a `status_every` fault (the caller adds `Retry-After`).
fn status_fault(status: u16, style: Style) -> Answer {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let title = code.canonical_reason().unwrap_or("Error");
    if matches!(status, 502 | 504) {
        let html = format!(
            "<html><head><title>{status} {title}</title></head>\
             <body><center><h1>{status} {title}</h1></center></body></html>"
        );
        Answer::new(code, "text/html", html.into_bytes())
    } else {
        problem(style, code, title, "injected fault", json!([]))
    }
}

/// What goes on the wire.
enum Outcome {
    Answer(Answer),
    /// Headers promise the whole body; half is sent, then the connection is
    /// aborted.
    Truncated(Answer),
    /// The connection is closed before any byte of response.
    Reset,
}

impl Outcome {
    fn into_response(self) -> Response {
        match self {
            Outcome::Answer(mut a) => {
                let body = Body::from(std::mem::take(&mut a.body));
                a.into_response(body, None)
            }
            Outcome::Truncated(mut a) => {
                let full = Bytes::from(std::mem::take(&mut a.body));
                let len = full.len();
                let half = full.slice(..len / 2);
                let stream = futures_util::stream::unfold(0u8, move |state| {
                    let half = half.clone();
                    async move {
                        match state {
                            0 => Some((Ok::<Bytes, io::Error>(half), 1)),
                            1 => {
                                // Let hyper flush the head and the first half
                                // before the body fails and the connection is
                                // aborted.
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                Some((Err(io::Error::other("sandbox: truncated body fault")), 2))
                            }
                            _ => None,
                        }
                    }
                });
                a.into_response(Body::from_stream(stream), Some(len))
            }
            Outcome::Reset => {
                // A body that fails before its first byte: hyper drops the
                // connection without writing the (still buffered) head.
                let stream = futures_util::stream::once(async {
                    Err::<Bytes, io::Error>(io::Error::other("sandbox: connection reset fault"))
                });
                let mut resp = Response::new(Body::from_stream(stream));
                *resp.status_mut() = StatusCode::OK;
                resp
            }
        }
    }
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let n = shared.next.fetch_add(1, Ordering::SeqCst).wrapping_add(1);
    let arrived = Instant::now();
    let at = arrived.saturating_duration_since(shared.started);
    let (parts, _body) = req.into_parts();
    let (outcome, status) = shared.decide(n, arrived, &parts);
    let header_text = |name: &str| {
        parts
            .headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let record = RequestRecord {
        n,
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        authorization: header_text("authorization"),
        accept: header_text("accept"),
        user_agent: header_text("user-agent"),
        api_version: header_text("api-version"),
        at,
        status,
    };
    // Logged on arrival: a client that gives up on a slow answer was still
    // seen by the server.
    lock(&shared.log).push(record);
    let stall = if shared.faults.stall_on.contains(&n) {
        STALL
    } else {
        Duration::ZERO
    };
    let delay = shared.faults.latency + stall;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    outcome.into_response()
}
