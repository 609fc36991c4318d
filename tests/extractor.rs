//! The extractor against the sandbox's faults: every paging style, the
//! request budget, Retry-After, 403/404, resets, and a collection that
//! changes during the sync. Each test checks what the server saw and what
//! landed.

mod common;

use std::time::Duration;

use lucca_sync::sandbox::{Faults, Mutation, RequestRecord, SandboxConfig, UserData};

use common::*;

fn pipeline(
    dir: &std::path::Path,
    source_extra: &str,
    streams: &str,
) -> (String, std::path::PathBuf) {
    let (destination, db) = duckdb_destination(dir);
    let text = format!(
        "version: 1\nname: t\nsource:\n  base_url: ${{LUCCA_BASE_URL}}\n  api_key: ${{LUCCA_API_KEY}}\n{source_extra}streams:\n{streams}destination:\n{destination}\n"
    );
    let path = dir.join("p.yaml");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    (path.to_string_lossy().into_owned(), db)
}

const UNLIMITED: &str = "  rate_limit_per_minute: unlimited\n";

fn users_stream(extra: &str) -> String {
    format!(
        "  - name: users\n    endpoint: /api/v3/users\n    params: {{ formerEmployees: \"true\" }}\n    fields: [id, lastName, modifiedAt]\n    primary_key: id\n{extra}"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn v4_paging_reads_every_page_and_stops_at_the_count() {
    let server = sandbox(SandboxConfig {
        users: UserData::Synthetic(8_000),
        ..SandboxConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let streams = "  - name: establishments\n    endpoint: /organization/structure/api/establishments\n    paging: v4\n    page_size: 50\n    fields: [id, name]\n    primary_key: id\n";
    let (path, db) = pipeline(dir.path(), UNLIMITED, streams);
    let out = lucca_sync(&["run", &path], &server.base_url(), KEY).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(ids(&db, "establishments"), (1..=200).collect::<Vec<i64>>());
    let queries: Vec<String> = server.requests().iter().map(|r| r.query.clone()).collect();
    assert_eq!(queries.len(), 4, "{queries:?}");
    assert!(queries[0].contains("page=1") && queries[3].contains("page=4"));
    assert!(
        queries[0].contains("fields.root=count%2Cnext") && queries[0].contains("sort=%2Bid"),
        "{queries:?}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_serving_smaller_pages_than_asked_is_read_to_its_count() {
    // Every page holds at most 40 records, fewer than asked (v3 1000, v4
    // 50): the count, not a short page, says when the collection ends.
    let server = sandbox(SandboxConfig {
        users: UserData::Synthetic(8_000),
        faults: Faults {
            page_cap: Some(40),
            ..Faults::default()
        },
        ..SandboxConfig::default()
    })
    .await;
    let establishments = "  - name: establishments\n    endpoint: /organization/structure/api/establishments\n    paging: v4\n    page_size: 50\n    fields: [id, name]\n    primary_key: id\n";
    for (streams, table, rows) in [
        (users_stream(""), "users", 8_000),
        (users_stream("    page_by: offset\n"), "users", 8_000),
        (establishments.to_owned(), "establishments", 200),
    ] {
        let before = server.requests().len();
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (path, db) = pipeline(dir.path(), UNLIMITED, &streams);
        let out = lucca_sync(&["run", &path], &server.base_url(), KEY).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let loaded = ids(&db, table);
        assert_eq!(
            (loaded.len(), loaded.first(), loaded.last()),
            (rows as usize, Some(&1), Some(&rows)),
            "ids 1..={rows}, each once: {streams}"
        );
        assert!(loaded.windows(2).all(|w| w[0] < w[1]), "{streams}");
        assert_eq!(
            server.requests().len() - before,
            rows as usize / 40,
            "one request per page of 40: {streams}"
        );
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cursor_paging_follows_next_links_with_the_api_version() {
    let server = sandbox(SandboxConfig {
        users: UserData::Synthetic(250),
        ..SandboxConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let streams = "  - name: employees\n    endpoint: /lucca-api/employees\n    paging: cursor\n    page_size: 100\n    primary_key: id\n";
    let (path, db) = pipeline(dir.path(), UNLIMITED, streams);
    let out = lucca_sync(&["run", &path], &server.base_url(), KEY).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let requests = server.requests();
    assert_eq!(requests.len(), 3, "{requests:?}");
    assert!(
        requests
            .iter()
            .all(|r| r.api_version.as_deref() == Some("2024-11-01"))
    );
    assert!(
        requests[0].query.contains("include=links%2CtotalCount"),
        "{}",
        requests[0].query
    );
    let rows = query_i64(&db, "select count(distinct id) from employees");
    assert_eq!(rows, query_i64(&db, "select count(*) from employees"));
    assert_eq!(rows, 250);
    // String ids stay strings.
    assert_eq!(
        query_string(
            &db,
            "select data_type from information_schema.columns where table_name='employees' and column_name='id'"
        ),
        "VARCHAR"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_403_fails_its_stream_only_and_exits_4() {
    let server = sandbox(SandboxConfig {
        faults: Faults {
            forbidden_paths: vec!["/api/v3/departments".into()],
            ..Faults::default()
        },
        ..SandboxConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let streams = format!(
        "{}  - name: departments\n    endpoint: /api/v3/departments\n    fields: [id, name]\n    primary_key: id\n",
        users_stream("")
    );
    let (path, db) = pipeline(dir.path(), UNLIMITED, &streams);
    let out = lucca_sync(&["run", &path], &server.base_url(), KEY).await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(
            "403 Forbidden: the API key's role has no right to read `/api/v3/departments`"
        ),
        "{}",
        text(&out.stdout)
    );
    assert!(
        query_i64(&db, "select count(*) from users") > 0,
        "the other stream loaded"
    );
    assert_eq!(
        query_i64(
            &db,
            "select count(*) from information_schema.tables where table_name = 'departments'"
        ),
        0
    );
    let department_requests = server
        .requests()
        .iter()
        .filter(|r| r.path == "/api/v3/departments")
        .count();
    assert_eq!(department_requests, 1, "a 403 is not retried");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_v3_stream_without_fields_gets_what_lucca_sends_without_a_projection() {
    // Without `fields`, Lucca answers id, name and url: the stream asks
    // for exactly those (and the count), not for the count alone.
    let server = sandbox(SandboxConfig::default()).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let streams = "  - name: departments\n    endpoint: /api/v3/departments\n    primary_key: id\n";
    let (path, db) = pipeline(dir.path(), UNLIMITED, streams);
    let out = lucca_sync(&["run", &path], &server.base_url(), KEY).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let query = server.requests()[0].query.clone();
    assert!(
        query.contains("fields=id%2Cname%2Curl%2Ccollection.count"),
        "{query}"
    );
    assert!(!ids(&db, "departments").is_empty());
    assert_eq!(
        query_i64(
            &db,
            "SELECT count(*) FROM departments WHERE name IS NOT NULL AND url IS NOT NULL"
        ),
        ids(&db, "departments").len() as i64
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_404_fails_the_stream_without_retry() {
    let server = sandbox(SandboxConfig::default()).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let streams =
        "  - name: nothing\n    endpoint: /api/v3/nothing\n    fields: [id]\n    primary_key: id\n";
    let (path, _db) = pipeline(dir.path(), UNLIMITED, streams);
    let out = lucca_sync(&["run", &path], &server.base_url(), KEY).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(server.requests().len(), 1);
    assert!(
        text(&out.stdout).contains("HTTP 404"),
        "{}",
        text(&out.stdout)
    );
    // Errors only: the log still says why the run failed.
    let quiet = lucca_sync(&["-qq", "run", &path], &server.base_url(), KEY).await;
    let stderr = text(&quiet.stderr);
    assert!(
        stderr.contains(r#""level":"ERROR""#) && stderr.contains("HTTP 404"),
        "{stderr}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_after_is_waited_in_full_for_429_and_503() {
    for status in [429u16, 503] {
        let server = sandbox(SandboxConfig {
            users: UserData::Synthetic(2_000),
            faults: Faults {
                status_every: Some((status, 2)),
                ..Faults::default()
            },
            ..SandboxConfig::default()
        })
        .await;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (path, db) = pipeline(dir.path(), UNLIMITED, &users_stream(""));
        let out = lucca_sync(&["run", &path], &server.base_url(), KEY).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert_eq!(ids(&db, "users"), (1..=2_000).collect::<Vec<i64>>());
        let requests = server.requests();
        let throttled = requests
            .iter()
            .position(|r| r.status == status)
            .unwrap_or_else(|| panic!("no {status}: {requests:?}"));
        let gap = requests[throttled + 1].at - requests[throttled].at;
        assert!(
            gap >= Duration::from_secs(1),
            "{status}: waited only {gap:?} of Retry-After: 1"
        );
        server.shutdown().await;
    }
}

/// Runs the users stream against a sandbox with `faults` and `source`
/// settings, and checks that it fails (exit 1) saying `expected`, after
/// `requests` requests if given.
async fn fails_saying(faults: Faults, source: &str, expected: &str, requests: Option<usize>) {
    let server = sandbox(SandboxConfig {
        faults,
        ..SandboxConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (path, _db) = pipeline(dir.path(), source, &users_stream(""));
    let out = lucca_sync(&["run", &path], &server.base_url(), KEY).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(expected),
        "{expected}\n{}",
        text(&out.stdout)
    );
    if let Some(requests) = requests {
        assert_eq!(server.requests().len(), requests, "{expected}");
    }
    server.shutdown().await;
}

/// Two streams of 500 pages each: the other stream is still reading when
/// one meets a 429.
fn two_paged_user_streams() -> String {
    format!(
        "{}{}",
        users_stream("    page_size: 10\n"),
        users_stream("    page_size: 10\n").replace("name: users", "name: users_again")
    )
}

/// The server saw no request while the run waited `wait_ms` after its
/// first 429 (but for one already on its way when the 429 left).
fn assert_nothing_sent_during_the_wait(requests: &[RequestRecord], wait_ms: u64) {
    let throttled = requests
        .iter()
        .find(|r| r.status == 429)
        .unwrap_or_else(|| panic!("no 429: {requests:?}"));
    let window = throttled.at + Duration::from_millis(20)
        ..throttled.at + Duration::from_millis(wait_ms.saturating_sub(50));
    let sent_meanwhile: Vec<_> = requests.iter().filter(|r| window.contains(&r.at)).collect();
    assert!(
        sent_meanwhile.is_empty(),
        "sent during the {wait_ms} ms wait after request {}: {sent_meanwhile:?}",
        throttled.n
    );
}

/// Lucca's limit is the tenant's: after one stream's 429, the other stream
/// must not send either until the wait is over, the server's `Retry-After`
/// or, without one, the backoff drawn.
#[tokio::test(flavor = "multi_thread")]
async fn a_429_holds_every_stream_of_the_tenant_with_or_without_retry_after() {
    // `None`: the sandbox's `Retry-After: 1`; `""`: no `Retry-After`.
    for retry_after in [None, Some(String::new())] {
        let server = sandbox(SandboxConfig {
            users: UserData::Synthetic(5_000),
            faults: Faults {
                status_every: Some((429, 400)),
                fault_retry_after: retry_after.clone(),
                ..Faults::default()
            },
            ..SandboxConfig::default()
        })
        .await;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let streams = two_paged_user_streams();
        let (path, db) = pipeline(dir.path(), UNLIMITED, &streams);
        // A backoff of 1 s (jittered below it) when there is no Retry-After.
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_lucca-sync"))
            .args(["run", &path])
            .env("LUCCA_BASE_URL", server.base_url())
            .env("LUCCA_API_KEY", KEY)
            .env("LUCCA_SYNC_RETRY_BACKOFF_MIN_MS", "1000")
            .env("LUCCA_SYNC_RETRY_BACKOFF_MAX_MS", "1000")
            .env("LUCCA_SYNC_LOG_FORMAT", "json")
            .output()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{retry_after:?}: {stderr}");
        assert_eq!(ids(&db, "users_again").len(), 5_000);
        // The wait of the first retry, from its log line.
        let wait_ms = stderr
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["status"] == 429)
            .and_then(|v| v["wait_ms"].as_u64())
            .unwrap_or_else(|| panic!("no retry logged: {stderr}"));
        assert!(wait_ms >= 200, "{stderr}");
        assert_nothing_sent_during_the_wait(&server.requests(), wait_ms);
        server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_after_above_the_cap_fails_the_stream_and_says_so() {
    fails_saying(
        Faults {
            status_every: Some((503, 1)),
            ..Faults::default()
        },
        &format!("{UNLIMITED}  max_retry_after_secs: 0\n"),
        "the server asked to wait 1s (Retry-After), more than max_retry_after_secs (0s)",
        Some(1),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_request_budget_spaces_requests_and_provokes_no_429() {
    let server = sandbox(SandboxConfig {
        users: UserData::Synthetic(5_000),
        faults: Faults {
            rate_limit_per_minute: Some(120),
            ..Faults::default()
        },
        ..SandboxConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (path, db) = pipeline(
        dir.path(),
        "  rate_limit_per_minute: 120\n",
        &users_stream(""),
    );
    let out = lucca_sync(&["run", &path], &server.base_url(), KEY).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(ids(&db, "users").len(), 5_000);
    let requests = server.requests();
    // Five pages and the check after a full last page.
    assert_eq!(requests.len(), 6);
    assert!(requests.iter().all(|r| r.status == 200), "{requests:?}");
    for pair in requests.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= Duration::from_millis(480), "evenly spaced: {gap:?}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn keyset_paging_neither_skips_nor_repeats_when_records_change_mid_sync() {
    let server = sandbox(SandboxConfig {
        users: UserData::Synthetic(3_000),
        faults: Faults {
            mutate_after: Some((
                1,
                Mutation {
                    insert: 5,
                    delete: vec![10, 1_500],
                    touch: vec![],
                },
            )),
            reset_on: vec![3],
            ..Faults::default()
        },
        ..SandboxConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (path, db) = pipeline(
        dir.path(),
        UNLIMITED,
        &users_stream("    page_size: 1000\n"),
    );
    let out = lucca_sync(&["run", &path], &server.base_url(), KEY).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // Id 10 was read before it was deleted; 1500 was deleted before its page.
    let expected: Vec<i64> = (1..=3_005).filter(|id| *id != 1_500).collect();
    assert_eq!(ids(&db, "users"), expected);
    let statuses: Vec<u16> = server.requests().iter().map(|r| r.status).collect();
    assert!(
        statuses.contains(&0),
        "a reset happened and was retried: {statuses:?}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn offset_paging_walks_the_collection_by_offset() {
    let server = sandbox(SandboxConfig {
        users: UserData::Synthetic(2_500),
        ..SandboxConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (path, db) = pipeline(
        dir.path(),
        UNLIMITED,
        &users_stream("    page_by: offset\n    page_size: 1000\n"),
    );
    let out = lucca_sync(&["run", &path], &server.base_url(), KEY).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(ids(&db, "users"), (1..=2_500).collect::<Vec<i64>>());
    let queries: Vec<String> = server.requests().iter().map(|r| r.query.clone()).collect();
    assert_eq!(queries.len(), 3, "ceil(2500 / 1000) requests: {queries:?}");
    for (query, offset) in queries.iter().zip([0, 1000, 2000]) {
        assert!(
            query.contains(&format!("paging={offset}%2C1000")),
            "{query}"
        );
        assert!(!query.contains("greaterthan"), "{query}");
        assert!(
            query.contains("orderBy=id%2Casc"),
            "a stable order: {query}"
        );
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_transient_status_is_retried_for_the_same_page() {
    for status in [408u16, 500, 502, 504] {
        let server = sandbox(SandboxConfig {
            users: UserData::Synthetic(3_000),
            faults: Faults {
                status_every: Some((status, 3)),
                ..Faults::default()
            },
            ..SandboxConfig::default()
        })
        .await;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (path, db) = pipeline(
            dir.path(),
            UNLIMITED,
            &users_stream("    page_size: 1000\n"),
        );
        let out = lucca_sync(&["run", &path], &server.base_url(), KEY).await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "{status}: {}",
            text(&out.stderr)
        );
        assert_eq!(ids(&db, "users"), (1..=3_000).collect::<Vec<i64>>());
        let requests = server.requests();
        let failed: Vec<_> = requests.iter().filter(|r| r.status == status).collect();
        assert!(!failed.is_empty(), "{status}: {requests:?}");
        for failure in failed {
            let next = requests
                .iter()
                .find(|r| r.n == failure.n + 1)
                .unwrap_or_else(|| panic!("{status}: no retry after {failure:?}"));
            assert_eq!(next.query, failure.query, "{status}: the same page again");
        }
        // 3 pages, and one failure in every 3 requests: 4 or 5 requests.
        assert!(requests.len() <= 5, "{status}: {requests:?}");
        server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_after_given_as_an_http_date_is_waited_for() {
    let server = sandbox(SandboxConfig {
        users: UserData::Synthetic(2_000),
        faults: Faults {
            status_every: Some((429, 2)),
            retry_after_http_date: true,
            ..Faults::default()
        },
        ..SandboxConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (path, db) = pipeline(dir.path(), UNLIMITED, &users_stream(""));
    let out = lucca_sync(&["run", &path], &server.base_url(), KEY).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(ids(&db, "users"), (1..=2_000).collect::<Vec<i64>>());
    let requests = server.requests();
    let throttled = requests
        .iter()
        .position(|r| r.status == 429)
        .unwrap_or_else(|| panic!("no 429: {requests:?}"));
    // The date is one second ahead, rounded up to a whole second: the retry
    // comes at least a second later (the test's backoff is at most 200 ms).
    let gap = requests[throttled + 1].at - requests[throttled].at;
    assert!(gap >= Duration::from_secs(1), "waited only {gap:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_that_times_out_is_retried_and_attempts_are_bounded() {
    // One stalled answer: the page is asked again after the timeout.
    let server = sandbox(SandboxConfig {
        users: UserData::Synthetic(2_000),
        faults: Faults {
            stall_on: vec![2],
            ..Faults::default()
        },
        ..SandboxConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let source = format!("{UNLIMITED}  request_timeout_secs: 1\n");
    let (path, db) = pipeline(dir.path(), &source, &users_stream(""));
    let out = lucca_sync(&["run", &path], &server.base_url(), KEY).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(ids(&db, "users"), (1..=2_000).collect::<Vec<i64>>());
    let requests = server.requests();
    // Two pages, one stalled once, and the check after a full last page.
    assert_eq!(requests.len(), 4, "{requests:?}");
    assert_eq!(requests[2].query, requests[1].query, "the same page again");
    assert!(requests[2].at - requests[1].at >= Duration::from_secs(1));
    server.shutdown().await;

    // Every answer stalls: the stream fails after max_attempts, saying why.
    fails_saying(
        Faults {
        stall_on: vec![1, 2, 3],
            ..Faults::default()
        },
        &format!("{UNLIMITED}  request_timeout_secs: 1\n  max_attempts: 2\n"),
        "timed out (a page that keeps timing out may be too big: try a smaller page_size or a larger request_timeout_secs)",
        Some(2),
    )
    .await;
}

/// A tenant that answers every request with a redirect to `target`.
async fn redirecting_server(target: String) -> (String, tokio::task::JoinHandle<()>) {
    use axum::response::IntoResponse;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let location = format!("{target}{uri}");
        async move {
            (
                axum::http::StatusCode::FOUND,
                [(axum::http::header::LOCATION, location)],
            )
                .into_response()
        }
    });
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), task)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redirect_to_another_host_is_refused_and_the_key_never_leaves() {
    let other_host = sandbox(SandboxConfig::default()).await;
    let (tenant, task) = redirecting_server(other_host.base_url()).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (path, db) = pipeline(dir.path(), UNLIMITED, &users_stream(""));
    let out = lucca_sync(&["run", &path], &tenant, KEY).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("refused a redirect to another host"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        other_host.requests().is_empty(),
        "the other host saw nothing: {:?}",
        other_host.requests()
    );
    if db.exists() {
        assert_eq!(
            query_i64(
                &db,
                "select count(*) from information_schema.tables where table_name = 'users'"
            ),
            0
        );
    }
    task.abort();
    other_host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_401_deep_into_one_of_several_streams_stops_them_all() {
    let server = sandbox(SandboxConfig {
        users: UserData::Synthetic(20_000),
        faults: Faults {
            unauthorized_after: Some(40),
            ..Faults::default()
        },
        ..SandboxConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let streams = format!(
        "{}  - name: departments\n    endpoint: /api/v3/departments\n    fields: [id, name]\n    primary_key: id\n  - name: establishments\n    endpoint: /organization/structure/api/establishments\n    paging: v4\n    page_size: 10\n    fields: [id, name]\n    primary_key: id\n",
        users_stream("    page_size: 100\n")
    );
    let (path, _db) = pipeline(dir.path(), UNLIMITED, &streams);
    let out = lucca_sync(&["run", &path], &server.base_url(), KEY).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let requests = server.requests();
    let first_401 = requests
        .iter()
        .find(|r| r.status == 401)
        .unwrap_or_else(|| panic!("no 401: {requests:?}"));
    assert_eq!(first_401.n, 41);
    // Requests already in flight when the 401 arrived (at most one per
    // other stream) may complete; nothing is sent after.
    assert!(requests.len() <= 43, "{} requests", requests.len());
    let left: Vec<_> = snapshot(&dir.path().join("out"))
        .into_iter()
        .filter(|(p, _)| !p.to_string_lossy().ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "nothing published: {left:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_v4_next_link_without_our_parameters_keeps_them_and_reads_every_page() {
    // The tenant's `next` links name only `limit` and `page` (relative,
    // then absolute): each followed link still carries `fields.root`,
    // `sort`, `fields` and the stream's `params`, so every page names the
    // next one and all 200 records land.
    let server = sandbox(SandboxConfig {
        users: UserData::Synthetic(8_000),
        faults: Faults {
            bare_next_links: true,
            ..Faults::default()
        },
        ..SandboxConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let streams = "  - name: establishments\n    endpoint: /organization/structure/api/establishments\n    paging: v4\n    page_size: 30\n    params: { legalUnitId: \"1,2\" }\n    fields: [id, name]\n    primary_key: id\n";
    let (path, db) = pipeline(dir.path(), UNLIMITED, streams);
    let out = lucca_sync(&["run", &path], &server.base_url(), KEY).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(ids(&db, "establishments"), (1..=200).collect::<Vec<i64>>());
    let queries: Vec<String> = server.requests().iter().map(|r| r.query.clone()).collect();
    assert_eq!(queries.len(), 7, "ceil(200 / 30) pages: {queries:?}");
    for (number, query) in (1..).zip(&queries) {
        for kept in [
            "fields.root=count%2Cnext",
            "sort=%2Bid",
            "fields=id%2Cname",
            "legalUnitId=1%2C2",
            "limit=30",
        ] {
            assert!(query.contains(kept), "page {number} lacks {kept}: {query}");
        }
        assert_eq!(
            query.matches("page=").count(),
            1,
            "the link's page wins: {query}"
        );
        assert!(query.contains(&format!("page={number}")), "{query}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_after_above_the_cap_holds_every_stream_too() {
    // One stream's 429 asks for 1 s, more than max_retry_after_secs (0):
    // that stream fails, and the pause is still the tenant's. The other
    // stream sends nothing inside the server's Retry-After; its own wait
    // would pass the cap as well, so it fails the same way.
    let server = sandbox(SandboxConfig {
        users: UserData::Synthetic(5_000),
        faults: Faults {
            status_every: Some((429, 40)),
            ..Faults::default()
        },
        ..SandboxConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let streams = two_paged_user_streams();
    let source = format!("{UNLIMITED}  max_retry_after_secs: 0\n");
    let (path, _db) = pipeline(dir.path(), &source, &streams);
    let out = lucca_sync(&["run", &path], &server.base_url(), KEY).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_nothing_sent_during_the_wait(&server.requests(), 1_000);
    let stdout = text(&out.stdout);
    assert_eq!(
        stdout
            .matches("more than max_retry_after_secs (0s)")
            .count(),
        2,
        "both streams fail, saying why: {stdout}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_429s_is_bounded_by_the_wait_budget_not_the_attempts() {
    // max_attempts: 2, yet 3 consecutive 429s (Retry-After: 1) and then 6
    // without Retry-After are waited out: 429s count against
    // max_retry_wait_secs only.
    for (retry_after, burst) in [(None, 3u32), (Some(String::new()), 6)] {
        let server = sandbox(SandboxConfig {
            users: UserData::Synthetic(2_000),
            faults: Faults {
                status_on: (1..=burst).map(|n| (n, 429)).collect(),
                fault_retry_after: retry_after.clone(),
                ..Faults::default()
            },
            ..SandboxConfig::default()
        })
        .await;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let source = format!("{UNLIMITED}  max_attempts: 2\n");
        let (path, db) = pipeline(dir.path(), &source, &users_stream(""));
        let out = lucca_sync(&["run", &path], &server.base_url(), KEY).await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "{retry_after:?}: {}",
            text(&out.stderr)
        );
        assert_eq!(ids(&db, "users"), (1..=2_000).collect::<Vec<i64>>());
        // Two pages, the check after a full last page, and the 429s.
        assert_eq!(server.requests().len(), burst as usize + 3);
        server.shutdown().await;
    }

    // 5xx bursts stay bounded by max_attempts.
    fails_saying(
        Faults {
            status_on: vec![(1, 503), (2, 503), (3, 503)],
            ..Faults::default()
        },
        &format!("{UNLIMITED}  max_attempts: 2\n"),
        "page 1 failed after 2 attempts: HTTP 503",
        Some(2),
    )
    .await;

    // 408s to the end (Lucca's 5 s server timeout) point at the page size.
    fails_saying(
        Faults {
        status_on: vec![(1, 408), (2, 408)],
            ..Faults::default()
        },
        &format!("{UNLIMITED}  max_attempts: 2\n"),
        "page 1 failed after 2 attempts: HTTP 408 Request Timeout (a page that keeps timing out may be too big: try a smaller page_size)",
        Some(2),
    )
    .await;

    // A storm longer than max_retry_wait_secs fails, saying why.
    fails_saying(
        Faults {
        status_on: (1..=20).map(|n| (n, 429)).collect(),
            ..Faults::default()
        },
        &format!("{UNLIMITED}  max_retry_wait_secs: 2\n"),
        "page 1 failed after 3 attempts: HTTP 429 Too Many Requests; waiting 1.0s more would pass max_retry_wait_secs (2s)",
        Some(3),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_200_body_with_a_byte_order_mark_is_read_without_retry() {
    let server = sandbox(SandboxConfig {
        users: UserData::Synthetic(2_000),
        faults: Faults {
            bom_on: vec![1, 2],
            ..Faults::default()
        },
        ..SandboxConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (path, db) = pipeline(dir.path(), UNLIMITED, &users_stream(""));
    let out = lucca_sync(&["run", &path], &server.base_url(), KEY).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(ids(&db, "users"), (1..=2_000).collect::<Vec<i64>>());
    let requests = server.requests();
    // Two pages, and the one more that checks a full last page.
    assert_eq!(requests.len(), 3, "no retry: {requests:?}");
    assert_eq!(
        query_i64(&db, "select count(*) from users where last_name is null"),
        0
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pipelines_of_one_run_on_one_host_share_the_strictest_rate_limit() {
    // a.yaml allows everything, b.yaml 120 a minute: the tenant's budget is
    // one, so a's requests are spaced by b's limit too, though a runs first.
    let server = sandbox(SandboxConfig {
        users: UserData::Synthetic(300),
        ..SandboxConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let a_dir = dir.path().join("a");
    let b_dir = dir.path().join("b");
    for d in [&a_dir, &b_dir] {
        std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("{e}"));
    }
    let (a, _) = pipeline(&a_dir, UNLIMITED, &users_stream("    page_size: 100\n"));
    let departments = "  - name: departments\n    endpoint: /api/v3/departments\n    fields: [id, name]\n    primary_key: id\n";
    let (b, _) = pipeline(&b_dir, "  rate_limit_per_minute: 120\n", departments);
    let renamed = std::fs::read_to_string(&b)
        .unwrap_or_else(|e| panic!("{e}"))
        .replacen("name: t\n", "name: b\n", 1);
    std::fs::write(&b, renamed).unwrap_or_else(|e| panic!("{e}"));
    let out = lucca_sync(&["run", &a, &b], &server.base_url(), KEY).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let users: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.path == "/api/v3/users")
        .map(|r| r.at)
        .collect();
    // Three pages and the check after a full last page.
    assert_eq!(users.len(), 4, "{users:?}");
    for pair in users.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(450),
            "a's requests follow 120/min: {users:?}"
        );
    }
    assert!(
        text(&out.stderr).contains("all of them share the strictest, 120/min"),
        "{}",
        text(&out.stderr)
    );
    server.shutdown().await;
}

/// A count is a hint, not the truth: one lower than the records there are
/// (records added meanwhile) or none at all, with an endpoint serving fewer
/// records than asked, must not end a stream early, and the stream costs
/// at most one request more than its pages.
#[tokio::test(flavor = "multi_thread")]
async fn a_count_short_of_the_truth_or_missing_does_not_cut_the_stream() {
    let cases = [
        ("short count", 25, false, None, 6),
        ("no count, capped pages", 0, true, Some(7), 9),
    ];
    for (case, shortfall, no_count, cap, most_requests) in cases {
        for page_by in ["id", "offset"] {
            let server = sandbox(SandboxConfig {
                users: UserData::Synthetic(50),
                faults: Faults {
                    count_shortfall: shortfall,
                    no_count,
                    page_cap: cap,
                    ..Faults::default()
                },
                ..SandboxConfig::default()
            })
            .await;
            let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
            let extra = format!("    page_size: 10\n    page_by: {page_by}\n");
            let (path, db) = pipeline(dir.path(), UNLIMITED, &users_stream(&extra));
            let out = lucca_sync(&["run", &path], &server.base_url(), KEY).await;
            assert_eq!(
                out.status.code(),
                Some(0),
                "{case}, {page_by}: {}",
                text(&out.stderr)
            );
            assert_eq!(
                ids(&db, "users"),
                (1..=50).collect::<Vec<i64>>(),
                "{case}, {page_by}"
            );
            let requests = server.requests().len();
            assert!(
                requests <= most_requests,
                "{case}, {page_by}: {requests} requests"
            );
            server.shutdown().await;
        }
    }
}

/// A tenant that ignores paging and filters: every request gets the same
/// `records` users and no count. Returns its URL, the requests it saw and
/// its task.
async fn paging_ignoring_server(
    records: i64,
) -> (
    String,
    std::sync::Arc<std::sync::atomic::AtomicU32>,
    tokio::task::JoinHandle<()>,
) {
    use axum::response::IntoResponse;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = std::sync::Arc::clone(&seen);
    let items: Vec<String> = (1..=records)
        .map(|id| format!(r#"{{"id":{id},"lastName":"n{id}"}}"#))
        .collect();
    let body = format!(r#"{{"data":{{"items":[{}]}}}}"#, items.join(","));
    let app = axum::Router::new().fallback(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let body = body.clone();
        async move { ([("content-type", "application/json")], body).into_response() }
    });
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), seen, server)
}

/// A page that repeats the one before ends the stream when the one before
/// was short (it held all there is); after a full one it fails the stream,
/// for more may be there, out of reach.
#[tokio::test(flavor = "multi_thread")]
async fn a_page_that_repeats_the_one_before_ends_the_stream() {
    for page_by in ["offset", "id"] {
        let stream = format!(
            "  - name: users\n    endpoint: /api/v3/users\n    fields: [id, lastName]\n    primary_key: id\n    page_size: 10\n    page_by: {page_by}\n"
        );
        let (url, seen, server) = paging_ignoring_server(2).await;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (path, db) = pipeline(dir.path(), UNLIMITED, &stream);
        let out = lucca_sync(&["run", &path], &url, KEY).await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "{page_by}: {}",
            text(&out.stderr)
        );
        assert_eq!(ids(&db, "users"), vec![1, 2], "{page_by}");
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 2);
        server.abort();

        let (url, seen, server) = paging_ignoring_server(10).await;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (path, _db) = pipeline(dir.path(), UNLIMITED, &stream);
        let out = lucca_sync(&["run", &path], &url, KEY).await;
        assert_eq!(
            out.status.code(),
            Some(1),
            "{page_by}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains("the page repeats the page before"),
            "{page_by}: {}",
            text(&out.stderr)
        );
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 2);
        server.abort();
    }
}
