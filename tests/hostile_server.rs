//! The extractor against servers that misbehave in ways Lucca's tenant (and
//! so the sandbox) does not: a gateway echoing the request's headers in its
//! error pages, links that never end, bodies that are valid JSON of a kind
//! no tenant should send. Each test serves its answers from a closure.

mod common;

use std::sync::{Arc, Mutex};

use common::*;

/// One request as the scripted server saw it.
#[derive(Debug, Clone)]
struct Req {
    /// `http://127.0.0.1:{port}`.
    base: String,
    path: String,
    query: String,
    authorization: String,
    /// When it arrived.
    at: std::time::Instant,
}

/// An answer: status, `Content-Type` (the `Location` of a 3xx) and body.
type Answer = (u16, &'static str, String);

/// A server answering every request with `answer`; returns its base URL and
/// the requests it saw.
async fn scripted_server(
    answer: impl Fn(&Req) -> Answer + Send + Sync + 'static,
) -> (String, Arc<Mutex<Vec<Req>>>, tokio::task::JoinHandle<()>) {
    use axum::response::IntoResponse;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let base = format!("http://{addr}");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let answer = Arc::new(answer);
    let app = {
        let seen = Arc::clone(&seen);
        let base = base.clone();
        axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: axum::http::HeaderMap| {
                let req = Req {
                    base: base.clone(),
                    path: uri.path().to_owned(),
                    query: uri.query().unwrap_or_default().to_owned(),
                    authorization: headers
                        .get(axum::http::header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned(),
                    at: std::time::Instant::now(),
                };
                let (status, content_type, body) = answer(&req);
                seen.lock().unwrap_or_else(|e| e.into_inner()).push(req);
                let header = if (300..400).contains(&status) {
                    axum::http::header::LOCATION
                } else {
                    axum::http::header::CONTENT_TYPE
                };
                async move {
                    (
                        axum::http::StatusCode::from_u16(status)
                            .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR),
                        [(header, content_type)],
                        body,
                    )
                        .into_response()
                }
            },
        )
    };
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (base, seen, task)
}

fn requests(seen: &Arc<Mutex<Vec<Req>>>) -> Vec<Req> {
    seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// A pipeline file of `streams` (YAML list items) into a DuckDB file.
fn pipeline(dir: &std::path::Path, streams: &str) -> (String, std::path::PathBuf) {
    let (destination, db) = duckdb_destination(dir);
    let text = format!(
        "version: 1\nname: t\nsource:\n  base_url: ${{LUCCA_BASE_URL}}\n  api_key: ${{LUCCA_API_KEY}}\n  rate_limit_per_minute: unlimited\n  max_attempts: 2\nstreams:\n{streams}destination:\n{destination}\n"
    );
    let path = dir.join("p.yaml");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    (path.to_string_lossy().into_owned(), db)
}

fn stream(name: &str, endpoint: &str, extra: &str) -> String {
    format!(
        "  - name: {name}\n    endpoint: {endpoint}\n    fields: [id, name]\n    primary_key: id\n{extra}"
    )
}

/// A v3 page of `ids`.
fn v3_page(ids: std::ops::RangeInclusive<u32>) -> String {
    let items: Vec<String> = ids
        .clone()
        .map(|id| format!(r#"{{"id":{id},"name":"n{id}"}}"#))
        .collect();
    format!(
        r#"{{"data":{{"items":[{}],"count":{}}}}}"#,
        items.join(","),
        items.len()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn an_error_page_echoing_the_key_never_shows_it() {
    // Gateways that echo the request's `Authorization` header in their
    // error pages, as JSON, problem+json, text and HTML.
    let (base, seen, task) = scripted_server(|req| {
        let echo = &req.authorization;
        match req.path.as_str() {
            "/api/v3/p400" => (
                400,
                "application/problem+json",
                format!(
                    r#"{{"type":"x","title":"Bad Request: {echo}","status":400,"detail":"Authorization: {echo}"}}"#
                ),
            ),
            "/api/v3/m400" => (
                400,
                "application/json",
                format!(r#"{{"Message":"Invalid header Authorization={echo}"}}"#),
            ),
            "/api/v3/t403" => (403, "text/plain", format!("Forbidden for {echo}")),
            "/api/v3/h404" => (
                404,
                "text/html",
                format!("<html><pre>GET /x\nAuthorization: {echo}</pre></html>"),
            ),
            _ => (200, "application/json", v3_page(1..=3)),
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let streams: String = ["p400", "m400", "t403", "h404", "users"]
        .iter()
        .map(|s| stream(s, &format!("/api/v3/{s}"), ""))
        .collect();
    let (path, db) = pipeline(dir.path(), &streams);
    let summary = dir.path().join("summary.json");
    let summary_arg = summary.to_string_lossy().into_owned();
    for args in [
        vec!["-v", "run", "--summary-json", &summary_arg, &path],
        vec!["check", &path],
        vec!["run", "--dry-run", &path],
    ] {
        let out = lucca_sync(&args, &base, KEY).await;
        let shown = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(
            shown.contains("lucca application=<redacted>"),
            "{args:?}: {shown}"
        );
        assert!(!shown.contains(KEY), "{args:?}: {shown}");
    }
    let written = std::fs::read_to_string(&summary).unwrap_or_else(|e| panic!("{e}"));
    assert!(written.contains("<redacted>"), "{written}");
    assert!(!written.contains(KEY), "{written}");
    let history = query_string(
        &db,
        "select string_agg(coalesce(error, ''), ' | ') from _lucca_sync_runs",
    );
    assert!(history.contains("<redacted>"), "{history}");
    assert!(!history.contains(KEY), "{history}");
    assert_eq!(ids(&db, "users"), vec![1, 2, 3]);
    // The pages really did echo the key.
    let sent = format!("lucca application={KEY}");
    assert!(requests(&seen).iter().all(|r| r.authorization == sent));
    task.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_next_link_that_never_ends_fails_the_stream_instead_of_looping() {
    // A cursor link and a v4 cursor that always name the same next page.
    let records = r#"[{"id":1,"name":"a"},{"id":2,"name":"b"}]"#;
    let (base, seen, task) = scripted_server(move |req| {
        let body = if req.path.starts_with("/lucca-api/") {
            format!(
                r#"{{"items":{records},"totalCount":2,"links":{{"next":{{"href":"{}{}?page=abc&limit=2"}}}}}}"#,
                req.base, req.path
            )
        } else {
            format!(r#"{{"items":{records},"count":2,"next":"abc"}}"#)
        };
        (200, "application/json", body)
    })
    .await;
    for (endpoint, paging) in [
        ("/lucca-api/employees", "cursor"),
        ("/organization/structure/api/x", "v4"),
    ] {
        let before = requests(&seen).len();
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (path, _db) = pipeline(
            dir.path(),
            &stream(
                "s",
                endpoint,
                &format!("    paging: {paging}\n    page_size: 2\n"),
            ),
        );
        let out = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            lucca_sync(&["run", &path], &base, KEY),
        )
        .await
        .unwrap_or_else(|_| panic!("{paging}: still running after 60 s"));
        assert_eq!(
            out.status.code(),
            Some(1),
            "{paging}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stdout).contains("one already read in this stream"),
            "{paging}: {}",
            text(&out.stdout)
        );
        assert_eq!(requests(&seen).len() - before, 2, "{paging}");
    }
    task.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lone_surrogate_escape_is_stored_as_the_replacement_character() {
    // .NET writes half an emoji as a lone surrogate escape.
    let (base, seen, task) = scripted_server(|_| {
        (
            200,
            "application/json",
            r#"{"data":{"items":[{"id":1,"name":"ok"},{"id":2,"name":"broken \ud83d end"},{"id":3,"name":"x\udc00"},{"id":4,"n\ud800me":"key"}],"count":4}}"#.to_owned(),
        )
    })
    .await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (path, db) = pipeline(dir.path(), &stream("s", "/api/v3/x", ""));
    let out = lucca_sync(&["run", &path], &base, KEY).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert_eq!(requests(&seen).len(), 1);
    assert_eq!(
        query_string(
            &db,
            "select string_agg(coalesce(name, '-'), '|' order by id) from s"
        ),
        "ok|broken \u{fffd} end|x\u{fffd}|-"
    );
    task.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_problem_json_error_shows_its_errors() {
    // ASP.NET's ValidationProblemDetails: the title says little, `errors`
    // says what to change.
    let (base, _seen, task) = scripted_server(|_| {
        (
            400,
            "application/problem+json",
            r#"{"type":"https://tools.ietf.org/html/rfc7231#section-6.5.1","title":"One or more validation errors occurred.","status":400,"errors":{"limit":["The field limit must be between 1 and 100."]}}"#.to_owned(),
        )
    })
    .await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (path, _db) = pipeline(
        dir.path(),
        &stream(
            "e",
            "/lucca-api/employees",
            "    paging: cursor\n    page_size: 500\n",
        ),
    );
    let out = lucca_sync(&["run", &path], &base, KEY).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("HTTP 400 (One or more validation errors occurred.: limit: The field limit must be between 1 and 100.) (not retried)"),
        "{}",
        text(&out.stdout)
    );
    task.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_next_link_naming_the_other_scheme_on_the_tenant_is_followed_on_ours() {
    // A tenant behind a proxy writes its links with the scheme it sees:
    // https on our (loopback) http base. Followed on the base's scheme.
    let (base, seen, task) = scripted_server(|req| {
        let page: u32 = req
            .query
            .split('&')
            .find_map(|p| p.strip_prefix("page="))
            .and_then(|p| p.parse().ok())
            .unwrap_or(1);
        let next = if page < 3 {
            let https = req.base.replacen("http://", "https://", 1);
            format!(r#""{https}{}?limit=2&page={}""#, req.path, page + 1)
        } else {
            "null".to_owned()
        };
        let first = page * 2 - 1;
        (
            200,
            "application/json",
            format!(
                r#"{{"items":[{{"id":{first},"name":"a"}},{{"id":{},"name":"b"}}],"count":6,"next":{next}}}"#,
                first + 1
            ),
        )
    })
    .await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (path, db) = pipeline(
        dir.path(),
        &stream(
            "s",
            "/organization/structure/api/x",
            "    paging: v4\n    page_size: 2\n",
        ),
    );
    let out = lucca_sync(&["run", &path], &base, KEY).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert_eq!(ids(&db, "s"), (1..=6).collect::<Vec<i64>>());
    assert_eq!(requests(&seen).len(), 3);
    task.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_nested_too_deeply_fails_at_once_without_retry() {
    let (base, seen, task) = scripted_server(|_| {
        let deep = format!("{}1{}", "[".repeat(300), "]".repeat(300));
        (
            200,
            "application/json",
            format!(r#"{{"data":{{"items":[{{"id":1,"x":{deep}}}],"count":1}}}}"#),
        )
    })
    .await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (path, _db) = pipeline(dir.path(), &stream("s", "/api/v3/x", ""));
    let out = lucca_sync(&["run", &path], &base, KEY).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("deeper than 128 levels"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(requests(&seen).len(), 1, "not retried");
    task.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redirect_hop_takes_a_slot_of_the_budget_and_is_counted() {
    let (base, seen, task) = scripted_server(|req| match req.path.as_str() {
        "/api/v3/old" => (301, "/api/v3/new", String::new()),
        "/api/v3/loop" => (302, "/api/v3/loop", String::new()),
        _ => (200, "application/json", v3_page(1..=3)),
    })
    .await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (path, db) = pipeline(dir.path(), &stream("s", "/api/v3/old", ""));
    let limited = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{e}"))
        .replacen(
            "rate_limit_per_minute: unlimited",
            "rate_limit_per_minute: 120",
            1,
        );
    std::fs::write(&path, limited).unwrap_or_else(|e| panic!("{e}"));
    let summary = dir.path().join("summary.json");
    let out = lucca_sync(
        &["run", "--summary-json", &summary.to_string_lossy(), &path],
        &base,
        KEY,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert_eq!(ids(&db, "s"), vec![1, 2, 3]);
    let sent = requests(&seen);
    let paths: Vec<&str> = sent.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/api/v3/old", "/api/v3/new"]);
    assert!(
        sent[1].at - sent[0].at >= std::time::Duration::from_millis(450),
        "the hop waits for its slot (120/min)"
    );
    let written = std::fs::read_to_string(&summary).unwrap_or_else(|e| panic!("{e}"));
    let json: serde_json::Value = serde_json::from_str(&written).unwrap_or_else(|e| panic!("{e}"));
    assert!(written.contains("\"requests\": 2"), "{json}");
    // A redirect loop ends after 5 hops, each of them sent and counted.
    let before = requests(&seen).len();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (path, _db) = pipeline(dir.path(), &stream("s", "/api/v3/loop", ""));
    let out = lucca_sync(&["run", &path], &base, KEY).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("too many redirects (more than 5)"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(requests(&seen).len() - before, 6);
    task.abort();
}
