//! The sandbox: a fake Lucca tenant served over HTTP on 127.0.0.1, faithful
//! to `lucca-api-facts.md`, with injectable faults, so that tests, the demo
//! and benchmarks run offline against something that behaves like Lucca.
//!
//! # Endpoints
//! Every request needs `Authorization: lucca application={api_key}` (the
//! scheme `Lucca` is accepted too; `/lucca-api/...` also accepts
//! `Bearer {api_key}`); anything else answers 401.
//!
//! - `GET /api/v3/users`, `GET /api/v3/departments`: Legacy v3 lists with
//!   `paging=offset,limit` (default `0,1000`, limit above 1000 -> 400),
//!   `fields=` projection (brackets, dotted form, `collection.count`; without
//!   `fields` items carry only `id`, `name`, `url`; with only
//!   `collection.count`, `items` is left out), `formerEmployees=true`
//!   (users), filters `id=` and `modifiedAt=` with the operators of the facts
//!   file, `orderBy=id,asc|desc`. The envelope is [`Envelope`].
//!   `GET /api/v3/users/{id}` and `/api/v3/departments/{id}` answer
//!   `{"data": {...}}`.
//! - `GET /organization/structure/api/establishments`: Legacy v4, `limit`
//!   (default 10, max 100) and 1-based `page`, `sort=+id|-id`,
//!   `fields.root=count,prev,next` (prev/next are absolute URLs or null).
//! - Every other endpoint of the catalog (`lucca-sync endpoints`): leaves,
//!   leave requests and types, contracts, legal units, axes and sections,
//!   roles, work cycles, user logs, time entries, timesheets, expense claims,
//!   items and natures, work locations, user locations and extension
//!   definitions, derived from the first 100 users (see `catalog_data`):
//!   v3 ones with the same paging, projection and filters as users (plus
//!   filters on their own fields, e.g. `date=between,a,b`), v4 ones with
//!   the same `limit`/`page` as establishments plus `fields`. Leaves answer
//!   400 without a `date` filter or without an owner filter
//!   (`leavePeriod.ownerId`, `leavePeriod.owner.departmentId`).
//! - `GET /lucca-api/employees`: the newer API; needs
//!   `Api-Version: 2024-11-01`, cursor paging (`limit` default 25, max 100,
//!   opaque `page`), `include=totalCount,links`, string ids, UTC timestamps,
//!   RFC 7807 errors.
//!
//! # Faults, in order of precedence
//! Each request gets the next arrival number `n` (1-based, every request
//! counts, whatever its answer). Then:
//! 1. `mutate_after = (k, m)`: the first request with `n > k` applies `m`
//!    before being answered (this is not an answer, the checks go on);
//! 2. `reset_on` contains `n`: the connection is closed without a response;
//! 3. `unauthorized_after = k` and `n > k`, or a wrong/missing key: 401;
//! 4. rate limit exceeded: 429 with `Retry-After` (only requests admitted by
//!    the limiter occupy the 60 s window);
//! 5. the path is in `forbidden_paths`: 403;
//! 6. `status_on` names `n`, or `status_every = (s, k)` and `n % k == 0`:
//!    that status;
//! 7. the normal answer; when it is a 200, `truncate_body_on` cuts its body
//!    mid-way, `invalid_json_on` replaces it with non-JSON and `bom_on`
//!    puts a UTF-8 byte order mark before it.
//!
//! `latency` delays every answer (including faults).

mod catalog_data;
mod data;
mod query;
mod render;
mod server;
#[cfg(test)]
mod tests;

use std::fmt;
use std::time::Duration;

pub use server::{Sandbox, serve_forever, serve_until};

/// The API key of [`SandboxConfig::default`].
pub const DEFAULT_API_KEY: &str = "sandbox-api-key";

/// How the fake tenant behaves. `Default` is fixture users, no faults, the
/// default envelope and the key [`DEFAULT_API_KEY`].
#[derive(Clone)]
pub struct SandboxConfig {
    /// The one valid API key; anything else answers 401.
    pub api_key: String,
    /// Which users the tenant has.
    pub users: UserData,
    /// Injected faults (none by default).
    pub faults: Faults,
    /// The v3 list envelope.
    pub envelope: Envelope,
    /// Pre-serialized pages: every 200 answer is kept by URL and served
    /// again as bytes, without rendering. For benchmarks, so that the
    /// sandbox costs next to no CPU once each page was asked for once
    /// (memory: the whole tenant as JSON). Off by default.
    pub cache_pages: bool,
    /// Serve this many time entries at `/api/v3/timeentries` instead of
    /// the few derived from the first users (benchmarks: a large endpoint
    /// besides users). Their owners are the tenant's first users.
    pub time_entries: Option<u32>,
}

impl Default for SandboxConfig {
    fn default() -> SandboxConfig {
        SandboxConfig {
            api_key: DEFAULT_API_KEY.to_owned(),
            users: UserData::default(),
            faults: Faults::default(),
            envelope: Envelope::default(),
            cache_pages: false,
            time_entries: None,
        }
    }
}

impl SandboxConfig {
    /// Fixture users, no faults, the default envelope, key `api_key`.
    pub fn new(api_key: impl Into<String>) -> SandboxConfig {
        SandboxConfig {
            api_key: api_key.into(),
            ..SandboxConfig::default()
        }
    }

    /// The same configuration with these users.
    pub fn with_users(mut self, users: UserData) -> SandboxConfig {
        self.users = users;
        self
    }

    /// The same configuration with these faults.
    pub fn with_faults(mut self, faults: Faults) -> SandboxConfig {
        self.faults = faults;
        self
    }

    /// The same configuration with this v3 envelope.
    pub fn with_envelope(mut self, envelope: Envelope) -> SandboxConfig {
        self.envelope = envelope;
        self
    }
}

impl fmt::Debug for SandboxConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxConfig")
            .field("api_key", &"<redacted>")
            .field("users", &self.users)
            .field("faults", &self.faults)
            .field("envelope", &self.envelope)
            .field("cache_pages", &self.cache_pages)
            .finish()
    }
}

/// The users of the tenant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UserData {
    /// `fixtures/users.json` and `fixtures/departments.json` (compiled in).
    #[default]
    Fixtures,
    /// `n` deterministic synthetic users, ids `1..=n`, over 12 synthetic
    /// departments (ids `1..=12`).
    Synthetic(u32),
}

/// The envelope of a v3 list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Envelope {
    /// `{"data":{"items":[..],"count":N}}`.
    #[default]
    DataItems,
    /// `{"items":[..],"count":N}`.
    RootItems,
    /// `{"header":{"generated":..,"principal":..,"processId":..},"data":{..}}`.
    WithHeader,
}

/// Injected faults; see the module documentation for their precedence.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// Added to every response.
    pub latency: Duration,
    /// Sliding 60 s window for the whole server; above it, 429 with
    /// `Retry-After` = seconds until a slot frees, rounded up.
    pub rate_limit_per_minute: Option<u32>,
    /// Send `Retry-After` as an HTTP date instead of seconds.
    pub retry_after_http_date: bool,
    /// `(status, k)`: answer `status` on every k-th request (`n % k == 0`);
    /// 503 and 429 carry a `Retry-After` of 1 s (as seconds, or as an HTTP
    /// date with `retry_after_http_date`); 502 and 504 have an HTML body.
    pub status_every: Option<(u16, u32)>,
    /// Requests after the first `k` answer 401 even with the right key.
    pub unauthorized_after: Option<u32>,
    /// Request numbers whose 200 body is cut mid-way: `Content-Length`
    /// promises the full body, half is sent, then the connection is aborted.
    pub truncate_body_on: Vec<u32>,
    /// Request numbers answered only after a stall of 30 s (on top of
    /// `latency`), to exercise the client's request timeout.
    pub stall_on: Vec<u32>,
    /// Request numbers whose connection is closed without a response.
    pub reset_on: Vec<u32>,
    /// Request numbers whose 200 answer has a body that is not JSON.
    pub invalid_json_on: Vec<u32>,
    /// `(k, m)`: once request `k` has arrived, the next request applies `m`.
    pub mutate_after: Option<(u32, Mutation)>,
    /// Paths (exact, e.g. `/api/v3/departments`) that answer 403.
    pub forbidden_paths: Vec<String>,
    /// `(n, status)`: request `n` answers `status`, with the body and
    /// `Retry-After` of a `status_every` answer (a burst of 429s, say).
    pub status_on: Vec<(u32, u16)>,
    /// The `Retry-After` of the 429s and 503s of `status_every` and
    /// `status_on`: `None` for 1 s (as seconds, or an HTTP date with
    /// `retry_after_http_date`); `Some(text)` sends `text` as it is (`"2.5"`),
    /// or no `Retry-After` at all when `text` is empty.
    pub fault_retry_after: Option<String>,
    /// v4 `next` and `prev` links name only `limit` and `page`, dropping
    /// the request's other parameters (`fields`, `fields.root`, `sort`,
    /// filters): relative (`?limit=..&page=..`) from odd pages, absolute
    /// URLs from even pages.
    pub bare_next_links: bool,
    /// Request numbers whose 200 body starts with a UTF-8 byte order mark.
    pub bom_on: Vec<u32>,
    /// Every v3 and v4 list page holds at most this many records, whatever
    /// the request asked: an endpoint whose own maximum is below the page
    /// size the client assumed (the count still tells the whole).
    pub page_cap: Option<usize>,
    /// v3 and v4 list counts fall this many records short of the truth (a
    /// count that lags records added meanwhile).
    pub count_shortfall: usize,
    /// v3 and v4 list pages carry no count, even when asked for one.
    pub no_count: bool,
}

/// A change of the user collection in the middle of a sync.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mutation {
    /// New current employees, with ids above every existing id, modified now.
    pub insert: u32,
    /// Ids of users to delete.
    pub delete: Vec<u32>,
    /// Ids of users whose `modifiedAt` becomes now (an edit).
    pub touch: Vec<u32>,
}

/// One request as the sandbox saw it.
#[derive(Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// 1-based arrival number.
    pub n: u32,
    pub method: String,
    pub path: String,
    /// The raw query string (without `?`), empty when there is none.
    pub query: String,
    /// The `Authorization` header as sent (redacted in `Debug`).
    pub authorization: Option<String>,
    pub accept: Option<String>,
    pub user_agent: Option<String>,
    /// The `Api-Version` header.
    pub api_version: Option<String>,
    /// Arrival time since the server started.
    pub at: Duration,
    /// Final status: 0 for a reset connection, 200 for a truncated body.
    pub status: u16,
}

impl fmt::Debug for RequestRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestRecord")
            .field("n", &self.n)
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &self.query)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .field("accept", &self.accept)
            .field("user_agent", &self.user_agent)
            .field("api_version", &self.api_version)
            .field("at", &self.at)
            .field("status", &self.status)
            .finish()
    }
}
