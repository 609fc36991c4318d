//! The HTTP client for one Lucca tenant: authentication headers, redirects
//! that never leave the tenant, and the middleware stack (request budget,
//! stop-on-401) every request goes through.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::Extensions;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{Request, Response, StatusCode};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware, Next};
use tokio_util::sync::CancellationToken;

use super::budget::RequestBudget;
use crate::pipeline::Secret;

/// Counters of one stream's traffic, read by the run summary.
#[derive(Debug, Default)]
pub struct StreamCounters {
    /// Requests actually sent (attempts, retries included).
    pub requests: AtomicU64,
    /// Attempts that were retries.
    pub retries: AtomicU64,
    /// Responses with status 429.
    pub throttled: AtomicU64,
    /// Records read so far (for progress).
    pub records: AtomicU64,
    /// Pages read so far (for progress).
    pub pages: AtomicU64,
    /// The count the API reported plus one; 0 while unknown.
    pub api_count_plus_one: AtomicU64,
    /// Date windows begun so far (a sliced stream; 0 otherwise).
    pub windows_begun: AtomicU64,
}

impl StreamCounters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Current value of a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// The count the API reported, once it has.
    pub fn api_count(&self) -> Option<u64> {
        Self::get(&self.api_count_plus_one).checked_sub(1)
    }
}

/// Timeouts of the HTTP client.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TCP (and TLS) connect timeout.
    pub connect: Duration,
    /// Whole request, body included.
    pub request: Duration,
}

/// Builds the client for one tenant. Every request carries
/// `Authorization: lucca application={key}` (marked sensitive, so reqwest
/// never prints it), `Accept: application/json` and
/// `User-Agent: lucca-sync/{version}`.
pub fn build_client(
    api_key: &Secret,
    timeouts: Timeouts,
    budget: Arc<RequestBudget>,
    stop: CancellationToken,
    rejected: KeyRejection,
) -> Result<ClientWithMiddleware, reqwest::Error> {
    let mut headers = HeaderMap::new();
    // A key with characters not allowed in a header is sent as it is by no
    // client; report it as invalid without echoing it.
    let mut auth = HeaderValue::from_str(&format!("lucca application={}", api_key.expose()))
        .unwrap_or_else(|_| HeaderValue::from_static("lucca application=invalid-key"));
    auth.set_sensitive(true);
    headers.insert(AUTHORIZATION, auth);
    headers.insert(ACCEPT, HeaderValue::from_static("application/json"));

    let client = reqwest::Client::builder()
        .default_headers(headers)
        .user_agent(concat!("lucca-sync/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(timeouts.connect)
        .timeout(timeouts.request)
        // Redirects are followed by [`RedirectMiddleware`], each hop
        // through the budget and the 401 gate like any request.
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    Ok(ClientBuilder::new(client)
        .with(RedirectMiddleware)
        .with(BudgetMiddleware { budget })
        .with(StopOn401Middleware { stop, rejected })
        .build())
}

/// Redirect hops followed for one request, at most.
const MAX_REDIRECTS: usize = 5;

/// Why a redirect was not followed.
#[derive(Debug, thiserror::Error)]
pub enum RedirectRefused {
    #[error("refused a redirect to another host ({0}): the API key is only sent to the tenant")]
    OtherHost(String),
    #[error("too many redirects (more than {MAX_REDIRECTS})")]
    TooMany,
    #[error("a redirect's Location is not a URL ({0})")]
    BadLocation(String),
}

/// Follows redirects within the same scheme, host and port only, so the API
/// key never reaches another host. Each hop goes down the rest of the
/// middleware stack as a request of its own: it waits for its slot in the
/// tenant's budget and is counted, as the tenant counts it.
struct RedirectMiddleware;

#[async_trait::async_trait]
impl Middleware for RedirectMiddleware {
    async fn handle(
        &self,
        req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let first = req.url().clone();
        let mut req = req;
        let mut hops = 0;
        loop {
            // A GET has no body: it can always be sent again.
            let again = req.try_clone();
            let response = next.clone().run(req, extensions).await?;
            if !response.status().is_redirection() {
                return Ok(response);
            }
            let (Some(location), Some(mut again)) = (
                response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok()),
                again,
            ) else {
                return Ok(response);
            };
            let target = response.url().join(location).map_err(|e| {
                reqwest_middleware::Error::middleware(RedirectRefused::BadLocation(e.to_string()))
            })?;
            let same_origin = first.scheme() == target.scheme()
                && first.host_str() == target.host_str()
                && first.port_or_known_default() == target.port_or_known_default();
            if !same_origin {
                let host = target.host_str().unwrap_or("?").to_owned();
                return Err(reqwest_middleware::Error::middleware(
                    RedirectRefused::OtherHost(host),
                ));
            }
            hops += 1;
            if hops > MAX_REDIRECTS {
                return Err(reqwest_middleware::Error::middleware(
                    RedirectRefused::TooMany,
                ));
            }
            *again.url_mut() = target;
            req = again;
        }
    }
}

/// The longest pause of the tenant's budget a request accepts to wait for
/// (the pipeline's `max_retry_after_secs`), as a request extension.
#[derive(Debug, Clone, Copy)]
pub struct MaxPause(pub Duration);

/// Error returned by the budget middleware when the tenant is paused
/// (a `Retry-After`) for longer than the request's [`MaxPause`].
#[derive(Debug, thiserror::Error)]
#[error("the tenant is paused for {left:?} more (Retry-After); request not sent")]
pub struct PausedTooLong {
    /// What is left of the pause.
    pub left: Duration,
}

/// Makes every attempt wait for its slot in the tenant's request budget,
/// or refuses it when a pause would hold it past its [`MaxPause`].
struct BudgetMiddleware {
    budget: Arc<RequestBudget>,
}

#[async_trait::async_trait]
impl Middleware for BudgetMiddleware {
    async fn handle(
        &self,
        req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let max_pause = extensions
            .get::<MaxPause>()
            .map_or(Duration::MAX, |max| max.0);
        if let Err(left) = self.budget.acquire_within(max_pause).await {
            return Err(reqwest_middleware::Error::middleware(PausedTooLong {
                left,
            }));
        }
        next.run(req, extensions).await
    }
}

/// The last gate before the network: refuses to send once the run is
/// stopping, and stops the run the moment a 401 arrives, before any other
/// request can leave.
struct StopOn401Middleware {
    stop: CancellationToken,
    rejected: KeyRejection,
}

/// Set, with the URL that got it, when a 401 stopped the run: tells a stop
/// caused by a rejected key from one caused by a signal, whichever stream's
/// task sees the stop first.
#[derive(Debug, Clone, Default)]
pub struct KeyRejection(Arc<std::sync::OnceLock<String>>);

impl KeyRejection {
    /// The URL of the request that got the 401, if one did.
    pub fn url(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }
}

/// Error returned by the middleware when the run is stopping.
#[derive(Debug, thiserror::Error)]
#[error("the run is stopping; request not sent")]
pub struct RunStopping;

#[async_trait::async_trait]
impl Middleware for StopOn401Middleware {
    async fn handle(
        &self,
        req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        if self.stop.is_cancelled() {
            return Err(reqwest_middleware::Error::middleware(RunStopping));
        }
        if let Some(counters) = extensions.get::<Arc<StreamCounters>>() {
            StreamCounters::bump(&counters.requests);
        }
        let url = super::display_url(req.url());
        let response = next.run(req, extensions).await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            let _ = self.rejected.0.set(url);
            self.stop.cancel();
        }
        if response.status() == StatusCode::TOO_MANY_REQUESTS
            && let Some(counters) = extensions.get::<Arc<StreamCounters>>()
        {
            StreamCounters::bump(&counters.throttled);
        }
        Ok(response)
    }
}
