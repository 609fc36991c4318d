//! Tests of the sandbox through a plain HTTP client, so that what the
//! extractor will see (status, headers, bytes, broken connections) is what
//! is checked.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use serde_json::Value;

use super::data::{Store, civil_from_days, days_from_civil, fmt_ms, parse_naive_ms};
use super::query::{FieldsSpec, Proj, parse_fields};
use super::*;

const KEY: &str = "test-key-123";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn start(config: SandboxConfig) -> Sandbox {
    Sandbox::start(config).await.unwrap()
}

async fn fixtures() -> Sandbox {
    start(SandboxConfig::new(KEY)).await
}

async fn get(sb: &Sandbox, path_and_query: &str) -> reqwest::Response {
    client()
        .get(format!("{}{}", sb.base_url(), path_and_query))
        .header("Authorization", format!("lucca application={KEY}"))
        .send()
        .await
        .unwrap()
}

async fn get_json(sb: &Sandbox, path_and_query: &str) -> Value {
    let resp = get(sb, path_and_query).await;
    assert_eq!(resp.status(), 200, "{path_and_query}");
    resp.json().await.unwrap()
}

fn items(v: &Value) -> &Vec<Value> {
    v["data"]["items"].as_array().unwrap()
}

fn ids(v: &Value) -> Vec<u64> {
    items(v).iter().map(|u| u["id"].as_u64().unwrap()).collect()
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

// ------------------------------------------------------------------ auth

#[tokio::test]
async fn rejects_missing_or_wrong_key_and_logs_it() {
    let sb = fixtures().await;
    let url = format!("{}/api/v3/users", sb.base_url());
    let none = client().get(&url).send().await.unwrap();
    assert_eq!(none.status(), 401);
    let body: Value = none.json().await.unwrap();
    assert_eq!(body["status"], 401);
    let wrong = client()
        .get(&url)
        .header("Authorization", "lucca application=nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let capital = client()
        .get(&url)
        .header("Authorization", format!("Lucca application={KEY}"))
        .header("Accept", "application/json")
        .header("User-Agent", "sandbox-test/1")
        .send()
        .await
        .unwrap();
    assert_eq!(capital.status(), 200);
    let log = sb.requests();
    assert_eq!(
        log.iter().map(|r| (r.n, r.status)).collect::<Vec<_>>(),
        vec![(1, 401), (2, 401), (3, 200)]
    );
    assert_eq!(log[0].authorization, None);
    assert_eq!(
        log[1].authorization.as_deref(),
        Some("lucca application=nope")
    );
    assert_eq!(log[2].accept.as_deref(), Some("application/json"));
    assert_eq!(log[2].user_agent.as_deref(), Some("sandbox-test/1"));
    assert_eq!(log[2].path, "/api/v3/users");
    assert!(
        !format!("{:?}", log[2]).contains(KEY),
        "Debug leaks the key"
    );
    assert!(!format!("{:?}", SandboxConfig::new(KEY)).contains(KEY));
    sb.shutdown().await;
}

// ------------------------------------------------------------------ v3

#[tokio::test]
async fn without_fields_items_have_only_id_name_url() {
    let sb = fixtures().await;
    let v = get_json(&sb, "/api/v3/users").await;
    assert!(v["data"].get("count").is_none());
    let all = items(&v);
    assert_eq!(all.len(), 21, "25 fixture users minus 4 former employees");
    for u in all {
        assert_eq!(keys(u), set(&["id", "name", "url"]));
    }
    let doe = all.iter().find(|u| u["id"] == 416).unwrap();
    assert_eq!(doe["name"], "John Doe");
    assert_eq!(doe["url"], format!("{}/api/users/416", sb.base_url()));
    assert_eq!(
        ids(&v),
        sb.user_ids(false)
            .iter()
            .map(|i| u64::from(*i))
            .collect::<Vec<_>>()
    );
    sb.shutdown().await;
}

#[tokio::test]
async fn paging_and_collection_count() {
    let sb = fixtures().await;
    let v = get_json(&sb, "/api/v3/users?paging=0,5&fields=id,collection.count").await;
    assert_eq!(v["data"]["count"], 21);
    assert_eq!(ids(&v), vec![3, 7, 21, 34, 45]);
    assert_eq!(keys(&items(&v)[0]), set(&["id"]));
    let v = get_json(&sb, "/api/v3/users?paging=20,5&fields=id,collection.count").await;
    assert_eq!(ids(&v), vec![430]);
    assert_eq!(v["data"]["count"], 21);
    let v = get_json(&sb, "/api/v3/users?paging=40,5&fields=id").await;
    assert!(items(&v).is_empty());
    let only_count = get_json(&sb, "/api/v3/users?fields=collection.count").await;
    assert_eq!(only_count["data"]["count"], 21);
    assert!(only_count["data"].get("items").is_none());
    let too_big = get(&sb, "/api/v3/users?paging=0,1001").await;
    assert_eq!(too_big.status(), 400);
    let text = too_big.text().await.unwrap();
    assert!(text.contains("1000"), "{text}");
    assert_eq!(get(&sb, "/api/v3/users?paging=abc").await.status(), 400);
    let depts = get_json(&sb, "/api/v3/departments?fields=id,name,collection.count").await;
    assert_eq!(depts["data"]["count"], 6);
    assert_eq!(ids(&depts), vec![1, 2, 4, 5, 6, 13]);
    sb.shutdown().await;
}

#[tokio::test]
async fn fields_projection_nested_dotted_and_spelling() {
    let sb = fixtures().await;
    let v = get_json(
        &sb,
        "/api/v3/users?formerEmployees=true&fields=id,firstName,manager[id,name],department.name,cultureID,userWorkCycles[id,endsOn],nope,extendedData",
    )
    .await;
    let by_id: HashMap<u64, &Value> = items(&v)
        .iter()
        .map(|u| (u["id"].as_u64().unwrap(), u))
        .collect();
    let doe = by_id[&416];
    assert_eq!(
        keys(doe),
        set(&[
            "id",
            "firstName",
            "manager",
            "department",
            "cultureID",
            "userWorkCycles",
            "extendedData"
        ])
    );
    assert_eq!(
        doe["manager"],
        serde_json::json!({"id": 383, "name": "Roger Smith"})
    );
    assert_eq!(
        doe["department"],
        serde_json::json!({"name": "BU Timmi/Lucca"})
    );
    assert_eq!(
        doe["userWorkCycles"],
        serde_json::json!([{"id": 288, "endsOn": "2015-03-09T00:00:00"}])
    );
    assert_eq!(
        doe["extendedData"],
        serde_json::json!({"e_bloodType": "AB"})
    );
    // Matching is case-insensitive; the output keeps the record's spelling.
    for id in [3, 46, 207] {
        assert!(by_id[&id].get("cultureId").is_some(), "user {id}");
        assert!(by_id[&id].get("cultureID").is_none(), "user {id}");
    }
    assert_eq!(by_id[&383]["manager"], Value::Null);
    assert!(
        by_id[&233].get("extendedData").is_none(),
        "absent key stays absent"
    );
    // Deeper nesting, and a whole sub-object with its absolute url.
    let v = get_json(
        &sb,
        "/api/v3/users?id=416&fields=id,manager[id,url],department",
    )
    .await;
    let doe = &items(&v)[0];
    assert_eq!(
        doe["manager"]["url"],
        format!("{}/api/users/383", sb.base_url())
    );
    assert_eq!(
        doe["department"],
        serde_json::json!({"id": 13, "name": "BU Timmi/Lucca", "url": format!("{}/api/departments/13", sb.base_url())})
    );
    assert_eq!(
        get(&sb, "/api/v3/users?fields=manager[id").await.status(),
        400
    );
    sb.shutdown().await;
}

#[tokio::test]
async fn former_employees_only_on_request() {
    let sb = fixtures().await;
    let current = get_json(
        &sb,
        "/api/v3/users?fields=id,dtContractEnd,collection.count",
    )
    .await;
    assert_eq!(current["data"]["count"], 21);
    let ends: Vec<&Value> = items(&current)
        .iter()
        .map(|u| &u["dtContractEnd"])
        .collect();
    assert!(
        ends.iter()
            .all(|e| e.is_null() || *e == "2031-08-31T00:00:00")
    );
    let all = get_json(
        &sb,
        "/api/v3/users?formerEmployees=true&fields=id,collection.count",
    )
    .await;
    assert_eq!(all["data"]["count"], 25);
    let all_ids: BTreeSet<u64> = ids(&all).into_iter().collect();
    let current_ids: BTreeSet<u64> = ids(&current).into_iter().collect();
    let former: Vec<u64> = all_ids.difference(&current_ids).copied().collect();
    assert_eq!(former, vec![12, 29, 104, 207]);
    sb.shutdown().await;
}

#[tokio::test]
async fn keyset_filters_and_ordering() {
    let sb = fixtures().await;
    let v = get_json(
        &sb,
        "/api/v3/users?id=greaterthan,100&orderBy=id,asc&paging=0,3&fields=id",
    )
    .await;
    assert_eq!(ids(&v), vec![118, 150, 233]);
    let v = get_json(
        &sb,
        "/api/v3/users?id=greaterthan,100&formerEmployees=true&paging=0,3&fields=id",
    )
    .await;
    assert_eq!(ids(&v), vec![104, 118, 150]);
    let v = get_json(
        &sb,
        "/api/v3/users?id=greaterthanorequal,118&paging=0,1&fields=id",
    )
    .await;
    assert_eq!(ids(&v), vec![118]);
    let v = get_json(&sb, "/api/v3/users?id=lessthan,21&fields=id").await;
    assert_eq!(ids(&v), vec![3, 7]);
    let v = get_json(&sb, "/api/v3/users?id=45&fields=id").await;
    assert_eq!(ids(&v), vec![45]);
    let v = get_json(&sb, "/api/v3/users?id=45,46,999&fields=id").await;
    assert_eq!(ids(&v), vec![45, 46]);
    let v = get_json(&sb, "/api/v3/users?orderBy=id,desc&paging=0,2&fields=id").await;
    assert_eq!(ids(&v), vec![430, 416]);
    let v = get_json(
        &sb,
        "/api/v3/users?modifiedAt=since,2025-01-01T00:00:00&fields=id,modifiedAt,collection.count",
    )
    .await;
    assert_eq!(v["data"]["count"], 11);
    assert_eq!(
        ids(&v),
        vec![7, 21, 45, 60, 75, 93, 118, 233, 311, 402, 430]
    );
    let v = get_json(
        &sb,
        "/api/v3/users?modifiedAt=since,2025-03-18T16:45:12.345&fields=id",
    )
    .await;
    assert_eq!(ids(&v), vec![21, 60, 93, 233, 430]);
    assert_eq!(
        get(&sb, "/api/v3/users?id=greaterthan,abc").await.status(),
        400
    );
    assert_eq!(
        get(&sb, "/api/v3/users?orderBy=name,asc").await.status(),
        400
    );
    sb.shutdown().await;
}

#[tokio::test]
async fn single_resource_and_unknown_paths() {
    let sb = fixtures().await;
    let v = get_json(&sb, "/api/v3/users/416?fields=id,login").await;
    assert_eq!(v, serde_json::json!({"data": {"id": 416, "login": "jdoe"}}));
    assert_eq!(get(&sb, "/api/v3/users/99999").await.status(), 404);
    assert_eq!(get(&sb, "/api/v3/nothing").await.status(), 404);
    let post = client()
        .post(format!("{}/api/v3/users", sb.base_url()))
        .header("Authorization", format!("lucca application={KEY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 405);
    sb.shutdown().await;
}

#[tokio::test]
async fn full_fixture_records_are_faithful() {
    let sb = fixtures().await;
    let v = get_json(&sb, "/api/v3/users/416?fields=id,name,url,displayName,modifiedAt,lastName,firstName,login,mail,dtContractStart,dtContractEnd,birthDate,employeeNumber,calendarId,cultureID,legalEntityId,departmentId,department,managerId,manager,rolePrincipalId,userWorkCycles,extendedData").await;
    let base = sb.base_url();
    let expected = serde_json::json!({"id": 416, "name": "John Doe", "url": format!("{base}/api/users/416"),
     "displayName": "Doe John", "modifiedAt": "2015-09-07T10:20:06.583",
     "lastName": "DOE", "firstName": "John", "login": "jdoe", "mail": "no-reply@lucca.fr",
     "dtContractStart": "2014-09-01T00:00:00", "dtContractEnd": null,
     "birthDate": "1989-12-22T00:00:00", "employeeNumber": "00057",
     "calendarId": 1, "cultureID": 1036, "legalEntityId": 1, "departmentId": 13,
     "department": {"id": 13, "name": "BU Timmi/Lucca", "url": format!("{base}/api/departments/13")},
     "managerId": 383, "manager": {"id": 383, "name": "Roger Smith", "url": format!("{base}/api/users/383")},
     "rolePrincipalId": 55,
     "userWorkCycles": [{"id": 288, "ownerID": 416, "workCycleID": 6,
       "startsOn": "1900-01-01T00:00:00", "endsOn": "2015-03-09T00:00:00"}],
     "extendedData": {"e_bloodType": "AB"}});
    assert_eq!(v["data"], expected);
    sb.shutdown().await;
}

#[tokio::test]
async fn envelopes() {
    let sb = start(SandboxConfig::new(KEY).with_envelope(Envelope::RootItems)).await;
    let v = get_json(&sb, "/api/v3/users?paging=0,2&fields=id,collection.count").await;
    assert_eq!(
        v,
        serde_json::json!({"items": [{"id": 3}, {"id": 7}], "count": 21})
    );
    sb.shutdown().await;
    let sb = start(SandboxConfig::new(KEY).with_envelope(Envelope::WithHeader)).await;
    let v = get_json(&sb, "/api/v3/users?paging=0,2&fields=id,collection.count").await;
    assert_eq!(
        v["data"],
        serde_json::json!({"items": [{"id": 3}, {"id": 7}], "count": 21})
    );
    for k in ["generated", "principal", "processId"] {
        assert!(v["header"].get(k).is_some(), "header.{k}");
    }
    sb.shutdown().await;
}

// ------------------------------------------------------------------ v4

#[tokio::test]
async fn v4_establishments_limit_page_count() {
    let sb = start(SandboxConfig::new(KEY).with_users(UserData::Synthetic(400))).await;
    let v = get_json(&sb, "/organization/structure/api/establishments").await;
    assert_eq!(v["items"].as_array().unwrap().len(), 10);
    assert!(v.get("count").is_none() && v.get("next").is_none());
    let first = &v["items"][0];
    assert_eq!(first["id"], 1);
    assert!(first["name"].is_string() && first["legalUnitId"].is_u64());
    let v = get_json(
        &sb,
        "/organization/structure/api/establishments?limit=3&page=2&fields.root=count,prev,next",
    )
    .await;
    assert_eq!(v["count"], 10);
    let got: Vec<u64> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect();
    assert_eq!(got, vec![4, 5, 6]);
    let next = v["next"].as_str().unwrap();
    assert!(
        next.starts_with(&sb.base_url()) && next.contains("page=3"),
        "{next}"
    );
    assert!(v["prev"].as_str().unwrap().contains("page=1"));
    let last = get_json(
        &sb,
        "/organization/structure/api/establishments?limit=3&page=4&fields.root=next",
    )
    .await;
    assert_eq!(last["items"].as_array().unwrap().len(), 1);
    assert_eq!(last["next"], Value::Null);
    let too_big = get(&sb, "/organization/structure/api/establishments?limit=101").await;
    assert_eq!(too_big.status(), 400);
    sb.shutdown().await;
    let sb = fixtures().await;
    let v = get_json(
        &sb,
        "/organization/structure/api/establishments?fields.root=count",
    )
    .await;
    assert_eq!(v["count"], 3);
    sb.shutdown().await;
}

// ------------------------------------------------------------------ lucca-api

#[tokio::test]
async fn cursor_endpoint_follows_links() {
    let sb = fixtures().await;
    let url = format!("{}/lucca-api/employees", sb.base_url());
    let no_version = client()
        .get(&url)
        .header("Authorization", format!("lucca application={KEY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(no_version.status(), 400);
    assert_eq!(
        no_version.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let problem: Value = no_version.json().await.unwrap();
    for k in ["type", "title", "status", "errors"] {
        assert!(problem.get(k).is_some(), "{k}");
    }
    let mut next = Some(format!("{url}?limit=10&include=totalCount,links"));
    let mut seen = Vec::new();
    let mut pages = 0;
    while let Some(href) = next {
        assert!(href.starts_with(&sb.base_url()), "{href}");
        let v: Value = client()
            .get(&href)
            .header("Authorization", format!("lucca application={KEY}"))
            .header("Api-Version", "2024-11-01")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["totalCount"], 25);
        assert_eq!(v["type"], "employees");
        for e in v["items"].as_array().unwrap() {
            seen.push(e["id"].as_str().unwrap().parse::<u32>().unwrap());
            let ts = e["lastUpdatedAt"].as_str().unwrap();
            assert!(ts.ends_with('Z'), "{ts}");
        }
        if pages > 0 {
            assert!(v["links"]["prev"]["href"].is_string());
        } else {
            assert_eq!(v["links"]["prev"], Value::Null);
        }
        next = v["links"]["next"]["href"].as_str().map(str::to_owned);
        pages += 1;
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, sb.user_ids(true));
    let bad = client()
        .get(format!("{url}?page=zzz"))
        .header("Authorization", format!("lucca application={KEY}"))
        .header("Api-Version", "2024-11-01")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let too_big = client()
        .get(format!("{url}?limit=101"))
        .header("Authorization", format!("lucca application={KEY}"))
        .header("Api-Version", "2024-11-01")
        .send()
        .await
        .unwrap();
    assert_eq!(too_big.status(), 400);
    sb.shutdown().await;
}

// ------------------------------------------------------------------ faults

fn with_faults(faults: Faults) -> SandboxConfig {
    SandboxConfig::new(KEY).with_faults(faults)
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after_seconds() {
    let sb = start(with_faults(Faults {
        rate_limit_per_minute: Some(2),
        ..Faults::default()
    }))
    .await;
    assert_eq!(get(&sb, "/api/v3/users?paging=0,1").await.status(), 200);
    assert_eq!(get(&sb, "/api/v3/users?paging=0,1").await.status(), 200);
    let r = get(&sb, "/api/v3/users?paging=0,1").await;
    assert_eq!(r.status(), 429);
    let secs: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((59..=60).contains(&secs), "{secs}");
    assert_eq!(sb.requests().last().map(|r| r.status), Some(429));
    sb.shutdown().await;
}

#[tokio::test]
async fn rate_limit_retry_after_as_http_date() {
    let sb = start(with_faults(Faults {
        rate_limit_per_minute: Some(1),
        retry_after_http_date: true,
        ..Faults::default()
    }))
    .await;
    assert_eq!(get(&sb, "/api/v3/users").await.status(), 200);
    let r = get(&sb, "/api/v3/users").await;
    assert_eq!(r.status(), 429);
    let date = httpdate::parse_http_date(r.headers()["retry-after"].to_str().unwrap()).unwrap();
    let wait = date.duration_since(std::time::SystemTime::now()).unwrap();
    assert!(
        wait > Duration::from_secs(58) && wait <= Duration::from_secs(61),
        "{wait:?}"
    );
    sb.shutdown().await;
}

#[tokio::test]
async fn status_every_kth_request() {
    let sb = start(with_faults(Faults {
        status_every: Some((503, 2)),
        ..Faults::default()
    }))
    .await;
    assert_eq!(get(&sb, "/api/v3/users").await.status(), 200);
    let r = get(&sb, "/api/v3/users").await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(get(&sb, "/api/v3/users").await.status(), 200);
    assert_eq!(get(&sb, "/api/v3/users").await.status(), 503);
    sb.shutdown().await;
    let sb = start(with_faults(Faults {
        status_every: Some((502, 1)),
        ..Faults::default()
    }))
    .await;
    let r = get(&sb, "/api/v3/users").await;
    assert_eq!(r.status(), 502);
    assert!(r.text().await.unwrap().contains("<html>"));
    sb.shutdown().await;
}

#[tokio::test]
async fn unauthorized_after_k_requests() {
    let sb = start(with_faults(Faults {
        unauthorized_after: Some(2),
        ..Faults::default()
    }))
    .await;
    assert_eq!(get(&sb, "/api/v3/users").await.status(), 200);
    assert_eq!(get(&sb, "/api/v3/users").await.status(), 200);
    assert_eq!(get(&sb, "/api/v3/users").await.status(), 401);
    assert_eq!(get(&sb, "/api/v3/users").await.status(), 401);
    sb.shutdown().await;
}

#[tokio::test]
async fn truncated_body_is_a_client_error() {
    let sb = start(with_faults(Faults {
        truncate_body_on: vec![1],
        ..Faults::default()
    }))
    .await;
    let r = get(
        &sb,
        "/api/v3/users?fields=id,name,mail&formerEmployees=true",
    )
    .await;
    assert_eq!(r.status(), 200);
    let promised = r.content_length().unwrap();
    assert!(promised > 100);
    assert!(
        r.bytes().await.is_err(),
        "reading a truncated body must fail"
    );
    // The next request is served normally on a new connection.
    let v = get_json(&sb, "/api/v3/users?fields=id").await;
    assert_eq!(items(&v).len(), 21);
    assert_eq!(
        sb.requests().iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![200, 200]
    );
    sb.shutdown().await;
}

#[tokio::test]
async fn reset_connection_is_a_transport_error() {
    let sb = start(with_faults(Faults {
        reset_on: vec![2],
        ..Faults::default()
    }))
    .await;
    let c = client();
    let url = format!("{}/api/v3/users", sb.base_url());
    let auth = format!("lucca application={KEY}");
    assert_eq!(
        c.get(&url)
            .header("Authorization", &auth)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let err = c.get(&url).header("Authorization", &auth).send().await;
    assert!(err.is_err(), "expected a transport error, got {err:?}");
    assert_eq!(
        c.get(&url)
            .header("Authorization", &auth)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        sb.requests().iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![200, 0, 200]
    );
    sb.shutdown().await;
}

#[tokio::test]
async fn invalid_json_body() {
    let sb = start(with_faults(Faults {
        invalid_json_on: vec![1],
        ..Faults::default()
    }))
    .await;
    let r = get(&sb, "/api/v3/users").await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
    get_json(&sb, "/api/v3/users").await;
    sb.shutdown().await;
}

#[tokio::test]
async fn forbidden_paths_answer_403() {
    let sb = start(with_faults(Faults {
        forbidden_paths: vec!["/api/v3/departments".to_owned()],
        ..Faults::default()
    }))
    .await;
    let r = get(&sb, "/api/v3/departments").await;
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], 403);
    assert!(
        v["missingRight"]
            .as_str()
            .unwrap()
            .contains("/api/v3/departments")
    );
    assert_eq!(get(&sb, "/api/v3/users").await.status(), 200);
    sb.shutdown().await;
}

#[tokio::test]
async fn latency_delays_answers() {
    let sb = start(with_faults(Faults {
        latency: Duration::from_millis(150),
        ..Faults::default()
    }))
    .await;
    let t = std::time::Instant::now();
    assert_eq!(get(&sb, "/api/v3/users").await.status(), 200);
    assert!(t.elapsed() >= Duration::from_millis(150));
    sb.shutdown().await;
}

#[tokio::test]
async fn mutation_inserts_and_deletes_between_pages() {
    let sb = start(with_faults(Faults {
        mutate_after: Some((
            1,
            Mutation {
                insert: 2,
                delete: vec![3, 416],
                ..Mutation::default()
            },
        )),
        ..Faults::default()
    }))
    .await;
    let before = get_json(&sb, "/api/v3/users?fields=id,collection.count").await;
    assert_eq!(before["data"]["count"], 21);
    let after = get_json(
        &sb,
        "/api/v3/users?fields=id,name,modifiedAt,collection.count",
    )
    .await;
    assert_eq!(after["data"]["count"], 21);
    let got = ids(&after);
    assert!(!got.contains(&3) && !got.contains(&416));
    assert_eq!(&got[got.len() - 2..], &[431, 432]);
    let new = &items(&after)[got.len() - 1];
    assert!(new["name"].as_str().is_some_and(|n| !n.is_empty()));
    assert!(new["modifiedAt"].as_str().is_some_and(|m| m > "2025-"));
    sb.shutdown().await;
}

#[tokio::test]
async fn fault_precedence_reset_before_auth() {
    let sb = start(with_faults(Faults {
        reset_on: vec![1],
        unauthorized_after: Some(0),
        ..Faults::default()
    }))
    .await;
    assert!(
        client()
            .get(format!("{}/api/v3/users", sb.base_url()))
            .send()
            .await
            .is_err()
    );
    assert_eq!(get(&sb, "/api/v3/users").await.status(), 401);
    sb.shutdown().await;
}

// ------------------------------------------------------------------ synthetic

#[tokio::test]
async fn synthetic_data_is_deterministic_and_consistent() {
    let q = "/api/v3/users?formerEmployees=true&paging=0,1000&fields=id,name,url,displayName,modifiedAt,lastName,firstName,login,mail,dtContractStart,dtContractEnd,birthDate,employeeNumber,calendarId,cultureID,legalEntityId,departmentId,department,managerId,manager,rolePrincipalId,userWorkCycles,extendedData,collection.count";
    let a = start(SandboxConfig::new(KEY).with_users(UserData::Synthetic(1000))).await;
    let b = start(SandboxConfig::new(KEY).with_users(UserData::Synthetic(1000))).await;
    let va = get_json(&a, q).await;
    let vb = get_json(&b, q).await;
    let strip = |v: &Value, base: &str| v.to_string().replace(base, "BASE");
    assert_eq!(strip(&va, &a.base_url()), strip(&vb, &b.base_url()));
    assert_eq!(va["data"]["count"], 1000);
    let users = items(&va);
    let former = users
        .iter()
        .filter(|u| u["dtContractEnd"].as_str().is_some_and(|d| d < "2025"))
        .count();
    assert!(
        (60..=140).contains(&former),
        "{former} former employees of 1000"
    );
    for u in users {
        let id = u["id"].as_u64().unwrap();
        if let Some(m) = u["managerId"].as_u64() {
            assert!(m < id, "manager {m} of {id}");
            assert_eq!(u["manager"]["id"], m);
        }
        let d = u["departmentId"].as_u64().unwrap();
        assert!((1..=12).contains(&d));
        assert!(u["name"].as_str().is_some_and(|n| !n.is_empty()));
    }
    // Only a user of the same id has the same data: id 42 is stable.
    let one_a = get_json(&a, "/api/v3/users/42?fields=id,name,login,modifiedAt").await;
    let one_b = get_json(&b, "/api/v3/users/42?fields=id,name,login,modifiedAt").await;
    assert_eq!(one_a, one_b);
    let current = get_json(&a, "/api/v3/users?fields=collection.count").await;
    assert_eq!(
        current["data"]["count"].as_u64().unwrap() as usize,
        a.user_ids(false).len()
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_million_synthetic_users_page_by_keyset() {
    let sb = start(SandboxConfig::new(KEY).with_users(UserData::Synthetic(1_000_000))).await;
    let v = get_json(
        &sb,
        "/api/v3/users?formerEmployees=true&id=greaterthan,998500&paging=0,1000&fields=id,name,manager[id,name],collection.count",
    )
    .await;
    assert_eq!(v["data"]["count"], 1500);
    let got = ids(&v);
    assert_eq!(got.len(), 1000);
    assert_eq!(got[0], 998_501);
    assert_eq!(got[999], 999_500);
    sb.shutdown().await;
}

// ------------------------------------------------------------------ units

#[test]
fn fixtures_are_consistent() {
    let store = Store::build(&UserData::Fixtures, days_from_civil(2026, 1, 1)).unwrap();
    assert_eq!(store.users.metas.len(), 25);
    assert_eq!(store.departments.metas.len(), 6);
    assert_eq!(store.users.metas.iter().filter(|m| m.former).count(), 4);
    let users: HashMap<u64, &serde_json::Map<String, Value>> = store
        .users
        .records
        .iter()
        .map(|r| (r["id"].as_u64().unwrap(), r))
        .collect();
    let depts: HashMap<u64, &serde_json::Map<String, Value>> = store
        .departments
        .records
        .iter()
        .map(|r| (r["id"].as_u64().unwrap(), r))
        .collect();
    for (id, u) in &users {
        assert_eq!(u["url"], format!("/api/users/{id}"));
        let d = u["departmentId"].as_u64().unwrap();
        assert_eq!(u["department"]["id"], d, "user {id}");
        assert_eq!(u["department"]["name"], depts[&d]["name"], "user {id}");
        match u.get("managerId").and_then(Value::as_u64) {
            Some(m) => {
                assert_eq!(u["manager"]["id"], m, "user {id}");
                assert_eq!(u["manager"]["name"], users[&m]["name"], "user {id}");
                assert!(
                    users[&m]["dtContractEnd"].is_null(),
                    "manager {m} is current"
                );
            }
            None => assert_eq!(u["manager"], Value::Null, "user {id}"),
        }
        assert!(parse_naive_ms(u["modifiedAt"].as_str().unwrap()).is_some());
        for c in u
            .get("userWorkCycles")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            assert_eq!(c["ownerID"], *id);
        }
    }
    for (id, d) in &depts {
        if let Some(h) = d["headID"].as_u64() {
            assert_eq!(d["head"]["name"], users[&h]["name"], "department {id}");
        }
    }
}

#[test]
fn fields_grammar() {
    let spec =
        parse_fields("id, manager[id,name[x]],department.name,department.id,collection.count")
            .unwrap();
    assert!(spec.count);
    let Some(Proj::Fields(list)) = spec.items else {
        panic!("expected fields")
    };
    let names: Vec<&str> = list.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, vec!["id", "manager", "department"]);
    assert_eq!(
        list[2].1,
        Proj::Fields(vec![("name".into(), Proj::All), ("id".into(), Proj::All)])
    );
    assert_eq!(
        parse_fields("manager.department.name").unwrap().items,
        Some(Proj::Fields(vec![(
            "manager".into(),
            Proj::Fields(vec![(
                "department".into(),
                Proj::Fields(vec![("name".into(), Proj::All)])
            )])
        )]))
    );
    assert_eq!(
        parse_fields("collection.count").unwrap(),
        FieldsSpec {
            items: None,
            count: true
        }
    );
    assert!(parse_fields("a[b").is_err());
    assert!(parse_fields("a]").is_err());
    assert!(parse_fields("[x]").is_err());
}

#[test]
fn naive_datetimes() {
    let ms = parse_naive_ms("2015-09-07T10:20:06.583").unwrap();
    assert_eq!(fmt_ms(ms), "2015-09-07T10:20:06.583");
    assert_eq!(
        parse_naive_ms("2025-01-01").unwrap(),
        parse_naive_ms("2025-01-01T00:00:00").unwrap()
    );
    assert_eq!(
        parse_naive_ms("2025-01-14T09:12:44.1234567").unwrap(),
        parse_naive_ms("2025-01-14T09:12:44.123").unwrap()
    );
    assert_eq!(
        fmt_ms(parse_naive_ms("2024-02-29T18:20:00").unwrap()),
        "2024-02-29T18:20:00"
    );
    assert!(parse_naive_ms("2023-02-29").is_none());
    assert!(parse_naive_ms("yesterday").is_none());
    for day in [-800_000, -1, 0, 1, 10_957, 20_000, 2_932_896] {
        let (y, m, d) = civil_from_days(day);
        assert_eq!(days_from_civil(y, m, d), day);
    }
}

#[test]
fn range_selection_matches_a_brute_force_scan() {
    use super::query::{Params, V3_MAX_LIMIT, V3Query};
    let store = Store::build(&UserData::Synthetic(3000), days_from_civil(2026, 1, 1)).unwrap();
    let filters = [
        "",
        "&id=greaterthan,2500",
        "&id=greaterthanorequal,2500",
        "&id=lessthan,100",
        "&id=lessthanorequal,100",
        "&id=between,10,20",
        "&id=5",
        "&id=0",
        "&id=greaterthan,9999",
    ];
    for filter in filters {
        for former in [false, true] {
            for desc in [false, true] {
                for (offset, limit) in [
                    (0, 0),
                    (0, 1),
                    (0, 1000),
                    (1, 10),
                    (7, 3),
                    (450, 1000),
                    (2690, 50),
                    (2999, 5),
                    (3000, 10),
                ] {
                    let q = format!(
                        "paging={offset},{limit}&fields=id,collection.count&formerEmployees={former}&orderBy=id,{}{filter}",
                        if desc { "desc" } else { "asc" }
                    );
                    let query = V3Query::parse(&Params::parse(&q), &[], V3_MAX_LIMIT).unwrap();
                    let (page, count) = query.select(&store.users, true);
                    let mut all: Vec<_> = store
                        .users
                        .metas
                        .iter()
                        .filter(|m| former || !m.former)
                        .filter(|m| query.id.iter().all(|c| c.matches(i64::from(m.id))))
                        .map(|m| m.id)
                        .collect();
                    if desc {
                        all.reverse();
                    }
                    let expected: Vec<u32> = all.iter().copied().skip(offset).take(limit).collect();
                    let got: Vec<u32> = page.iter().map(|m| m.id).collect();
                    assert_eq!(got, expected, "{q}");
                    assert_eq!(count, Some(all.len()), "{q}");
                }
            }
        }
    }
}

// ------------------------------------------------------------------ catalog

/// Every record of a catalog endpoint, read with its catalog fields and
/// params (a wide date window for sliced ones), through the same paging as
/// the extractor uses.
async fn catalog_records(sb: &Sandbox, name: &str) -> Vec<Value> {
    let entry = crate::catalog::find(name).unwrap().unwrap();
    let mut query: Vec<(String, String)> = entry.params.clone().into_iter().collect();
    if let Some(slice) = &entry.slice {
        query.push((
            slice.field.clone().unwrap(),
            "between,2000-01-01,2100-01-01".to_owned(),
        ));
    }
    let fields = entry.fields.join(",");
    let mut out = Vec::new();
    for page in 1.. {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &query {
            q.append_pair(k, v);
        }
        let items = match entry.paging {
            crate::pipeline::PagingStyle::V4 => {
                q.append_pair("fields", &fields);
                q.append_pair("limit", "100");
                q.append_pair("page", &page.to_string());
                let v = get_json(sb, &format!("{}?{}", entry.path, q.finish())).await;
                v["items"].as_array().unwrap().clone()
            }
            _ => {
                q.append_pair("fields", &fields);
                q.append_pair("paging", &format!("{},1000", (page - 1) * 1000));
                let v = get_json(sb, &format!("{}?{}", entry.path, q.finish())).await;
                items(&v).clone()
            }
        };
        let size = match entry.paging {
            crate::pipeline::PagingStyle::V4 => 100,
            _ => 1000,
        };
        let done = items.len() < size;
        out.extend(items);
        if done {
            break;
        }
    }
    out
}

fn id_set(records: &[Value], pointer: &str) -> BTreeSet<u64> {
    records
        .iter()
        .filter_map(|r| r.pointer(pointer).and_then(Value::as_u64))
        .collect()
}

#[tokio::test]
async fn every_catalog_endpoint_answers_with_its_catalog_fields() {
    let sb = fixtures().await;
    for entry in crate::catalog::endpoints().unwrap() {
        let records = catalog_records(&sb, &entry.name).await;
        assert!(!records.is_empty(), "{}: no records", entry.name);
        let tree = crate::pipeline::parse_fields(&entry.fields).unwrap();
        for path in crate::pipeline::leaf_paths(&tree) {
            let pointer = format!("/{}", path.replace('.', "/"));
            assert!(
                records.iter().any(|r| r.pointer(&pointer).is_some()),
                "{}: no record has {path}",
                entry.name
            );
        }
        for r in &records {
            assert!(r["id"].is_u64(), "{}: {r}", entry.name);
        }
    }
    sb.shutdown().await;
}

#[tokio::test]
async fn catalog_data_is_consistent_across_endpoints() {
    let sb = start(SandboxConfig::new(KEY).with_users(UserData::Synthetic(300))).await;
    let users = catalog_records(&sb, "users").await;
    let user_ids = id_set(&users, "/id");
    assert_eq!(user_ids.len(), 300);
    let departments = id_set(&catalog_records(&sb, "departments").await, "/id");
    assert!(id_set(&users, "/department/id").is_subset(&departments));
    let leaves = catalog_records(&sb, "leaves").await;
    let owners = id_set(&leaves, "/leavePeriod/ownerId");
    assert!(
        owners.len() > 50 && owners.is_subset(&user_ids),
        "{owners:?}"
    );
    let types = id_set(&catalog_records(&sb, "leave-types").await, "/id");
    assert!(id_set(&leaves, "/leaveAccount/id").is_subset(&types));
    let claims = catalog_records(&sb, "expense-claims").await;
    assert!(id_set(&claims, "/ownerId").is_subset(&user_ids));
    let items = catalog_records(&sb, "expense-items").await;
    assert!(id_set(&items, "/expenseClaimId").is_subset(&id_set(&claims, "/id")));
    let natures = id_set(&catalog_records(&sb, "expense-natures").await, "/id");
    assert!(id_set(&items, "/expenseNatureId").is_subset(&natures));
    let establishments = id_set(&catalog_records(&sb, "establishments").await, "/id");
    let contracts = catalog_records(&sb, "work-contracts").await;
    assert!(id_set(&contracts, "/establishmentId").is_subset(&establishments));
    assert!(id_set(&contracts, "/ownerId").is_subset(&user_ids));
    let locations = id_set(&catalog_records(&sb, "work-locations").await, "/id");
    let placed = catalog_records(&sb, "user-locations").await;
    assert!(id_set(&placed, "/workLocationId").is_subset(&locations));
    let sections = catalog_records(&sb, "axis-sections").await;
    let axes = id_set(&catalog_records(&sb, "axes").await, "/id");
    assert!(id_set(&sections, "/axisId").is_subset(&axes));
    let entries = catalog_records(&sb, "timeentries").await;
    assert!(id_set(&entries, "/axisSectionId").is_subset(&id_set(&sections, "/id")));
    let legal_units = id_set(&catalog_records(&sb, "legal-units").await, "/id");
    assert!(id_set(&users, "/legalEntityId").is_subset(&legal_units));
    sb.shutdown().await;
}

#[tokio::test]
async fn leaves_need_a_date_and_an_owner_filter_and_filter_on_them() {
    let sb = fixtures().await;
    let path = "/api/v3/leaves?fields=id,date,leavePeriod[ownerId],collection.count";
    let no_date = get(&sb, &format!("{path}&leavePeriod.ownerId=greaterthan,0")).await;
    assert_eq!(no_date.status(), 400);
    let no_owner = get(&sb, &format!("{path}&date=between,2024-01-01,2024-12-31")).await;
    assert_eq!(no_owner.status(), 400);
    let all = get_json(
        &sb,
        &format!(
            "{path}&leavePeriod.ownerId=greaterthan,0&date=between,2024-03-01T00:00:00,2024-03-31T23:59:59"
        ),
    )
    .await;
    let count = all["data"]["count"].as_u64().unwrap();
    assert!(count > 0 && count as usize == items(&all).len());
    for leave in items(&all) {
        let date = leave["date"].as_str().unwrap();
        assert!(date.starts_with("2024-03-"), "{date}");
    }
    // Keyset paging inside a window, as the extractor does it.
    let first = get_json(
        &sb,
        &format!(
            "{path}&leavePeriod.ownerId=greaterthan,0&date=between,2024-01-01,2024-12-31&orderBy=id,asc&paging=0,5"
        ),
    )
    .await;
    let page = ids(&first);
    assert_eq!(page.len(), 5);
    let last = page[4];
    let next = get_json(
        &sb,
        &format!(
            "{path}&leavePeriod.ownerId=greaterthan,0&date=between,2024-01-01,2024-12-31&orderBy=id,asc&id=greaterthan,{last}&paging=0,5"
        ),
    )
    .await;
    assert!(ids(&next).iter().all(|id| *id > last));
    // One owner only.
    let owner = items(&all)[0]["leavePeriod"]["ownerId"].as_u64().unwrap();
    let one = get_json(
        &sb,
        &format!("{path}&leavePeriod.ownerId={owner}&date=between,2020-01-01,2030-01-01"),
    )
    .await;
    assert!(
        items(&one)
            .iter()
            .all(|l| l["leavePeriod"]["ownerId"].as_u64() == Some(owner))
    );
    sb.shutdown().await;
}

#[tokio::test]
async fn v4_catalog_endpoints_page_and_project() {
    let sb = start(SandboxConfig::new(KEY).with_users(UserData::Synthetic(250))).await;
    let v = get_json(
        &sb,
        "/directory/api/4.0/work-contracts?fields=id,ownerId&limit=30&page=2&fields.root=count",
    )
    .await;
    assert_eq!(v["count"], 100);
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 30);
    assert_eq!(items[0], serde_json::json!({"id": 31, "ownerId": 31}));
    let too_big = get(&sb, "/work-locations/public/api/user-locations?limit=101").await;
    assert_eq!(too_big.status(), 400);
    sb.shutdown().await;
}

#[tokio::test]
async fn a_million_users_tenant_serves_catalog_endpoints_fast() {
    let sb = start(SandboxConfig::new(KEY).with_users(UserData::Synthetic(1_000_000))).await;
    let started = std::time::Instant::now();
    let v = get_json(
        &sb,
        "/api/v3/timeentries?fields=id,ownerId,collection.count&paging=0,10",
    )
    .await;
    assert!(v["data"]["count"].as_u64().unwrap() > 0);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    sb.shutdown().await;
}
