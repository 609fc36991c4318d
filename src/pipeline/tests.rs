//! Tests of the whole pipeline loading path: fixture files in
//! `tests/fixtures/pipelines/` and inline texts, asserting exact messages.

use std::path::Path;

use super::*;

const DIR: &str = "tests/fixtures/pipelines";

fn no_env(_: &str) -> Option<String> {
    None
}

fn test_env(name: &str) -> Option<String> {
    match name {
        "LUCCA_BASE_URL" => Some("http://127.0.0.1:4010".to_owned()),
        "LUCCA_API_KEY" => Some("k3y-s3cr3t".to_owned()),
        "KEY_DIR" => Some("/nonexistent".to_owned()),
        _ => None,
    }
}

fn fixture(name: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Pipeline, PipelineErrors> {
    load_with(&Path::new(DIR).join(name), env)
}

/// The errors of a fixture, one string each.
fn fixture_errors(name: &str, env: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
    match fixture(name, env) {
        Ok(p) => panic!("{name} loaded: {p:?}"),
        Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
    }
}

fn text_errors(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
    match parse(Path::new("p.yaml"), text, env) {
        Ok(p) => panic!("loaded: {p:?}"),
        Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
    }
}

fn loaded(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Pipeline {
    match parse(Path::new("p.yaml"), text, env) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

/// A valid pipeline whose stream part is `stream` (indented as a list item).
fn with_stream(stream: &str) -> String {
    format!(
        "version: 1\nname: t\nsource:\n  base_url: https://acme.ilucca.net\n  api_key: k\n\
         streams:\n{stream}destination:\n  duckdb: {{ path: out/t.duckdb }}\n"
    )
}

#[test]
fn valid_users_fixture_resolves() {
    let p = match fixture("valid_users.yaml", &test_env) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(p.path, Path::new(DIR).join("valid_users.yaml"));
    assert_eq!(p.name(), "users");
    assert_eq!(p.spec.source.base_url, "http://127.0.0.1:4010");
    assert_eq!(
        p.base_url().map(|u| u.to_string()),
        Ok("http://127.0.0.1:4010/".to_owned())
    );
    assert_eq!(
        p.spec.source.rate_limit_per_minute,
        RateLimit::PerMinute(50)
    );
    let key = match p.api_key() {
        Ok(key) => key,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(key.expose(), "k3y-s3cr3t");
    assert_eq!(p.streams.len(), 1);
    let s = &p.streams[0];
    assert_eq!(s.name(), "users");
    assert_eq!(s.spec.endpoint, "/api/v3/users");
    assert_eq!(s.page_size, 1000);
    assert_eq!(s.page_by, PageBy::Id);
    assert_eq!(s.primary_key, vec!["id".to_owned()]);
    assert_eq!(
        s.fields_query().as_deref(),
        Some("id,firstName,department[id,name],manager[id,name]")
    );
    assert_eq!(
        s.spec.params.get("formerEmployees").map(String::as_str),
        Some("true")
    );
    assert_eq!(s.spec.write_mode, WriteMode::Replace);
    match &p.spec.destination {
        DestinationSpec::Duckdb(d) => assert_eq!(d.path, Path::new("out/lucca.duckdb")),
        other => panic!("{other:?}"),
    }
    let debug = format!("{p:?}");
    assert!(!debug.contains("k3y-s3cr3t"), "{debug}");
}

#[test]
fn api_key_file_fixture_resolves_and_reads_the_key_at_run_time() {
    let p = match fixture("api_key_file.yaml", &test_env) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(p.spec.source.rate_limit_per_minute, RateLimit::Unlimited);
    let departments = &p.streams[0];
    assert_eq!(departments.page_by, PageBy::Offset);
    assert_eq!(departments.page_size, 1000);
    assert_eq!(
        departments.fields_query().as_deref(),
        Some("id,name,parent[id]")
    );
    let establishments = &p.streams[1];
    assert_eq!(establishments.page_by, PageBy::Offset);
    assert_eq!(establishments.page_size, 100);
    assert!(establishments.primary_key.is_empty());
    assert_eq!(establishments.fields_query(), None);
    assert_eq!(establishments.spec.write_mode, WriteMode::Append);

    let error = match p.api_key() {
        Ok(_) => panic!("read a key from /nonexistent"),
        Err(e) => e.to_string(),
    };
    assert_eq!(
        error,
        "tests/fixtures/pipelines/api_key_file.yaml:5:17: cannot read api_key_file \
         `/nonexistent/api-key`: No such file or directory (os error 2)"
    );
}

#[test]
fn api_key_file_is_trimmed_and_checked() {
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => panic!("{e}"),
    };
    let dir_name = dir.path().display().to_string();
    let env = |name: &str| (name == "KEY_DIR").then(|| dir_name.clone());
    let p = match fixture("api_key_file.yaml", &env) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    let key_file = dir.path().join("api-key");
    let write = |content: &str| {
        if let Err(e) = std::fs::write(&key_file, content) {
            panic!("{e}");
        }
    };

    write("  the-key\n");
    assert_eq!(
        p.api_key().map(|k| k.expose().to_owned()),
        Ok("the-key".to_owned())
    );

    write("line-one\nline-two\n");
    let error = p.api_key().err().map(|e| e.to_string());
    let expected = format!(
        "tests/fixtures/pipelines/api_key_file.yaml:5:17: api_key_file `{}` contains a line \
         break or another control character",
        key_file.display()
    );
    assert_eq!(error, Some(expected));
    assert!(!format!("{error:?}").contains("line-one"));

    write(" \n");
    let error = p.api_key().err().map(|e| e.message);
    assert_eq!(
        error,
        Some(format!("api_key_file `{}` is empty", key_file.display()))
    );
}

#[test]
fn bad_syntax_is_located() {
    assert_eq!(
        fixture_errors("bad_syntax.yaml", &test_env),
        vec![
            "tests/fixtures/pipelines/bad_syntax.yaml:10:5: did not find expected ',' or '}', \
             while parsing a flow mapping at line 9 column 13"
        ]
    );
}

#[test]
fn unknown_key_names_the_allowed_ones() {
    assert_eq!(
        fixture_errors("unknown_key.yaml", &test_env),
        vec![
            "tests/fixtures/pipelines/unknown_key.yaml:9:5: streams[0]: unknown field \
             `pagesize`, expected one of `name`, `endpoint`, `paging`, `page_by`, `page_size`, \
             `params`, `fields`, `primary_key`, `incremental`, `slice`, `write_mode`, `partition_by`, `columns`, `on_bad_value`, `on_schema_change`, `arrays`, `flatten_depth`, `naming`"
        ]
    );
}

#[test]
fn wrong_type_is_located_at_the_value() {
    assert_eq!(
        fixture_errors("wrong_type.yaml", &test_env),
        vec![
            "tests/fixtures/pipelines/wrong_type.yaml:6:26: source.rate_limit_per_minute: \
             rate_limit_per_minute must be a number or `unlimited`, not `fast`"
        ]
    );
}

#[test]
fn type_errors_name_yaml_types_not_rust_ones() {
    let text = with_stream("  - name: t\n    endpoint: /x\n    page_size: lots\n");
    assert_eq!(
        text_errors(&text, &test_env),
        vec![
            "p.yaml:9:16: streams[0].page_size: invalid type: string \"lots\", expected a whole \
             number, 0 or more"
        ]
    );
    assert_eq!(
        text_errors("- a\n- b\n", &test_env),
        vec!["p.yaml:1:1: invalid type: sequence, expected a mapping of `key: value` lines"]
    );
}

#[test]
fn missing_env_is_located_at_each_reference() {
    assert_eq!(
        fixture_errors("missing_env.yaml", &no_env),
        vec![
            "tests/fixtures/pipelines/missing_env.yaml:5:14: environment variable \
             `LUCCA_BASE_URL` is not set",
            "tests/fixtures/pipelines/missing_env.yaml:6:12: environment variable \
             `LUCCA_API_KEY` is not set",
            "tests/fixtures/pipelines/missing_env.yaml:10:59: environment variable `SINCE` is \
             not set",
            "tests/fixtures/pipelines/missing_env.yaml:12:20: environment variable `OUT_DIR` is \
             not set",
        ]
    );
}

#[test]
fn empty_env_values_are_errors_and_values_never_show() {
    let env = |name: &str| match name {
        "LUCCA_BASE_URL" => Some("not a url SECRETVALUE".to_owned()),
        "LUCCA_API_KEY" => Some(String::new()),
        _ => Some("SECRETVALUE".to_owned()),
    };
    let errors = fixture_errors("missing_env.yaml", &env);
    assert_eq!(
        errors,
        vec![
            "tests/fixtures/pipelines/missing_env.yaml:5:13: base_url must be an absolute URL \
             such as https://acme.ilucca.net (relative URL without a base)",
            "tests/fixtures/pipelines/missing_env.yaml:6:12: environment variable \
             `LUCCA_API_KEY` is set but empty",
        ]
    );
    assert!(errors.iter().all(|e| !e.contains("SECRETVALUE")));
}

#[test]
fn page_size_too_big() {
    assert_eq!(
        fixture_errors("page_size_too_big.yaml", &test_env),
        vec![
            "tests/fixtures/pipelines/page_size_too_big.yaml:9:16: page_size 20000 is above the \
             maximum of 10000 that v3 endpoints accept"
        ]
    );
}

#[test]
fn http_base_url_is_refused_off_loopback() {
    assert_eq!(
        fixture_errors("http_base_url.yaml", &test_env),
        vec![
            "tests/fixtures/pipelines/http_base_url.yaml:4:13: base_url must use https (plain \
             http is only allowed for loopback hosts such as the local sandbox)"
        ]
    );
}

#[test]
fn every_problem_is_reported_in_file_order() {
    let f = "tests/fixtures/pipelines/many_errors.yaml";
    let expected: Vec<String> = [
        "1:10: version 2 is not supported: this lucca-sync reads version 1",
        "2:7: name must not be empty",
        "4:13: base_url must not contain a query string or fragment (query parameters go in a \
         stream's `params`)",
        "6:3: set either api_key or api_key_file, not both",
        "9:15: endpoint `api/v3/users` must be a path on the tenant, such as /api/v3/users",
        "10:14: page_by: id needs primary_key: id",
        "11:18: invalid field `manager[id,name`: `[` at character 8 is never closed",
        "11:37: `collection.count` is not a record field: lucca-sync adds it to the request \
         itself",
        "12:23: primary_key lists `id` twice",
        "13:11: stream name `Users` clashes with `users` (line 8): table and file names ignore \
         letter case",
        "16:16: page_size must be at least 1",
        "17:14: page_by only applies to v3 paging; this stream uses v4 paging",
        "18:15: params must not set `limit`: lucca-sync pages by itself (see page_size)",
        "21:18: primary_key field `id` is not in `fields`",
        "23:11: stream name `2leaves` is not valid: use ASCII letters, digits and `_`, not starting \
         with a digit",
        "25:17: write_mode: merge needs a primary_key to match records on",
        "26:34: cursor_field `modifiedAt` is not in `fields`",
        "29:19: the destination path is empty",
    ]
    .iter()
    .map(|e| format!("{f}:{e}"))
    .collect();
    assert_eq!(fixture_errors("many_errors.yaml", &test_env), expected);
    // Display: one error per line.
    match fixture("many_errors.yaml", &test_env) {
        Ok(_) => panic!("loaded"),
        Err(errors) => assert_eq!(errors.to_string(), expected.join("\n")),
    }
}

#[test]
fn unreadable_file() {
    assert_eq!(
        fixture_errors("nope.yaml", &test_env),
        vec![
            "tests/fixtures/pipelines/nope.yaml: cannot read the pipeline file: No such file or \
             directory (os error 2)"
        ]
    );
}

#[test]
fn empty_file() {
    assert_eq!(
        text_errors("# nothing yet\n", &no_env),
        vec![
            "p.yaml: the pipeline file is empty (it needs version, name, source, streams and \
             destination)"
        ]
    );
}

#[test]
fn missing_fields_and_bad_destinations() {
    let text = "version: 1\nname: t\nsource:\n  base_url: https://acme.ilucca.net\n  api_key: k\n\
                streams:\n  - endpoint: /api/v3/t\n\
                destination:\n  duckdb: { path: x }\n";
    assert_eq!(
        text_errors(text, &no_env),
        vec![
            "p.yaml:7:5: streams[0]: missing field `name` (only a catalog endpoint, such as \
             `endpoint: users`, names its stream by default)"
        ]
    );
    let text = text.replace("  - endpoint", "  - name: t\n    endpoint");
    for (destination, error) in [
        (
            "sqlite: { path: x }",
            "p.yaml:10:3: destination: unknown variant `sqlite`, expected `duckdb` or `parquet`",
        ),
        (
            "duckdb: { path: x, mode: fast }",
            "p.yaml:10:22: destination.duckdb: unknown field `mode`, expected `path`",
        ),
        (
            "{ duckdb: { path: x }, parquet: { dir: y } }",
            "p.yaml:10:3: destination: set exactly one of `duckdb: { path: ... }` and \
             `parquet: { dir: ... }`",
        ),
        (
            "{}",
            "p.yaml:10:3: destination: set exactly one of `duckdb: { path: ... }` and \
             `parquet: { dir: ... }`",
        ),
    ] {
        let text = text.replace("duckdb: { path: x }", destination);
        assert_eq!(text_errors(&text, &no_env), vec![error], "{destination}");
    }
    let text = text.replace("duckdb: { path: x }", "parquet:\n    dir: out/p");
    match &loaded(&text, &no_env).spec.destination {
        DestinationSpec::Parquet(p) => assert_eq!(p.dir, Path::new("out/p")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn duplicate_keys_point_at_the_repeat() {
    let text = with_stream("  - name: t\n    endpoint: /a\n    fields: [id]\n    endpoint: /b\n");
    assert_eq!(
        text_errors(&text, &no_env),
        vec!["p.yaml:10:5: streams[0]: duplicate field `endpoint`"]
    );
    let text = format!(
        "{}name: again\n",
        with_stream("  - name: t\n    endpoint: /a\n")
    );
    assert_eq!(
        text_errors(&text, &no_env),
        vec!["p.yaml:11:1: duplicate field `name`"]
    );
}

#[test]
fn source_without_key() {
    let text = "version: 1\nname: t\nsource:\n  base_url: https://acme.ilucca.net\n\
                streams:\n  - name: t\n    endpoint: /api/v3/t\n\
                destination:\n  duckdb: { path: x }\n";
    assert_eq!(
        text_errors(text, &no_env),
        vec!["p.yaml:3:1: source needs api_key (e.g. `api_key: ${LUCCA_API_KEY}`) or api_key_file"]
    );
}

#[test]
fn escapes_and_unexpanded_fields() {
    let text = with_stream(
        "  - name: t\n    endpoint: /api/v3/${X}\n    params: { a: \"$${X}\", b: \"${X\" }\n",
    );
    assert_eq!(
        text_errors(&text, &test_env),
        vec![
            "p.yaml:8:15: `${...}` is not expanded in endpoint: only source.base_url, \
             source.api_key, source.api_key_file, pii_key, pii_key_file, params values and \
             destination paths read the environment",
            "p.yaml:9:31: `${` is not closed by `}` (write `$${` for a literal `${`)",
        ]
    );
    let text = with_stream("  - name: t\n    endpoint: /x\n    params: { a: \"$${X}\" }\n");
    let p = loaded(&text, &test_env);
    assert_eq!(
        p.streams[0].spec.params.get("a").map(String::as_str),
        Some("${X}")
    );
}

#[test]
fn an_endpoint_with_a_placeholder_is_refused() {
    let text = with_stream("  - name: t\n    endpoint: /api/v3/leaveRequests/{id}/approvals\n");
    assert_eq!(
        text_errors(&text, &test_env),
        vec![
            "p.yaml:8:15: endpoint `/api/v3/leaveRequests/{id}/approvals` has a placeholder: \
             lucca-sync reads collections, so write a real path (the id itself, or the \
             collection's path with a filter in `params`)"
        ]
    );
    let text = with_stream("  - name: t\n    endpoint: /api/v3/leaveRequests/42/approvals\n");
    loaded(&text, &test_env);
}

#[test]
fn stream_name_rules() {
    let text = with_stream(
        "  - name: users\n    endpoint: /a\n  - name: users\n    endpoint: /b\n\
         \x20 - name: _Lucca_Sync_runs\n    endpoint: /c\n  - name: a-b\n    endpoint: //evil.com/x\n\
         \x20 - name: d\n    endpoint: /\\evil.com/x\n\
         \x20 - name: lucca_sync_latest_runs\n    endpoint: /e\n\
         \x20 - name: users__user_work_cycles\n    endpoint: /f\n",
    );
    assert_eq!(
        text_errors(&text, &test_env),
        vec![
            "p.yaml:9:11: duplicate stream name `users` (first used at line 7)",
            "p.yaml:11:11: stream name `_Lucca_Sync_runs` is reserved: names starting with `_` \
             are lucca-sync's own tables and directories",
            "p.yaml:13:11: stream name `a-b` is not valid: use ASCII letters, digits and `_`, not \
             starting with a digit",
            "p.yaml:14:15: endpoint `//evil.com/x` must be a path on the tenant, such as \
             /api/v3/users",
            "p.yaml:16:15: endpoint `/\\evil.com/x` must be a path on the tenant, such as \
             /api/v3/users",
            "p.yaml:17:11: stream name `lucca_sync_latest_runs` is reserved: names starting with \
             `lucca_sync` are lucca-sync's own views",
            "p.yaml:19:11: stream name `users__user_work_cycles` is reserved: `__` joins a \
             stream's name to its child tables' (`users__user_work_cycles`)",
        ]
    );
}

#[test]
fn primary_key_and_params_rules() {
    let text = with_stream(
        "  - name: a\n    endpoint: /a\n    primary_key: id\n    fields: [name]\n\
         \x20   params: { orderBy: \"name,asc\", fields: x, paging: \"0,10\" }\n\
         \x20 - name: b\n    endpoint: /b\n    primary_key: [ownerId, date]\n    fields: [ownerId]\n\
         \x20   incremental:\n      cursor_field: modifiedAt\n    params: { modifiedAt: x }\n\
         \x20 - name: c\n    endpoint: /c\n    primary_key: { a: 1 }\n",
    );
    assert_eq!(
        text_errors(&text, &test_env),
        vec![
            "p.yaml:21:18: streams[2].primary_key: invalid type: map, expected a field name or \
             a list of field names"
        ]
    );
    let text = text.replace("    primary_key: { a: 1 }\n", "");
    assert_eq!(
        text_errors(&text, &test_env),
        vec![
            "p.yaml:9:18: primary_key field `id` is not in `fields`",
            "p.yaml:11:15: params must not set `orderBy` when paging by id (set `page_by: \
             offset` to filter or sort on it yourself)",
            "p.yaml:11:36: params must not set `fields`: list them in the stream's `fields`",
            "p.yaml:11:47: params must not set `paging`: lucca-sync pages by itself (see \
             page_size)",
            "p.yaml:14:28: primary_key field `date` is not in `fields`",
            "p.yaml:16:5: incremental reads only the records changed since the last run: with \
             write_mode: replace they would replace the whole table; use write_mode: merge (or \
             append)",
            "p.yaml:17:21: cursor_field `modifiedAt` is not in `fields`",
            "p.yaml:18:15: params must not set `modifiedAt`: incremental sync filters on it",
        ]
    );
}

#[test]
fn partition_by_rules() {
    let stream = "  - name: a\n    endpoint: /a\n    fields: [id, \"department[id]\", legalEntityId]\n\
                  \x20   partition_by: [legal_entity_id, department_id, legal_entity_id, nope]\n";
    let parquet = with_stream(stream).replace(
        "duckdb: { path: out/t.duckdb }",
        "parquet: { dir: out/parquet }",
    );
    assert_eq!(
        text_errors(&parquet, &test_env),
        vec![
            "p.yaml:10:52: partition_by lists `legal_entity_id` twice",
            "p.yaml:10:69: partition_by column `nope` is not a column of this stream (its \
             columns: id, department_id, legal_entity_id)",
        ]
    );
    let merge = stream.replace(
        "partition_by: [legal_entity_id, department_id, legal_entity_id, nope]",
        "primary_key: [id, legalEntityId]\n    write_mode: merge\n    partition_by: [legal_entity_id]",
    );
    let merge = with_stream(&merge).replace(
        "duckdb: { path: out/t.duckdb }",
        "parquet: { dir: out/parquet }",
    );
    assert_eq!(
        text_errors(&merge, &test_env),
        vec![
            "p.yaml:12:20: partition_by column `legal_entity_id` is part of the primary key: a \
             merge cannot partition on it (partition on another column, or use write_mode: replace)",
        ]
    );
    let duckdb = with_stream("  - name: a\n    endpoint: /a\n    partition_by: [id]\n");
    assert_eq!(
        text_errors(&duckdb, &test_env),
        vec!["p.yaml:9:5: partition_by only applies to a parquet destination"]
    );
}

#[test]
fn source_numbers() {
    let text = "version: 1\nname: t\nsource:\n  base_url: https://acme.ilucca.net\n  api_key: k\n\
                \x20 rate_limit_per_minute: 0\n\
                streams:\n  - name: t\n    endpoint: /api/v3/t\n\
                destination:\n  duckdb: { path: x }\n";
    assert_eq!(
        text_errors(text, &no_env),
        vec![
            "p.yaml:6:26: source.rate_limit_per_minute: rate_limit_per_minute must be at least 1 \
             (or `unlimited`)"
        ]
    );
    let text = text.replace(
        "rate_limit_per_minute: 0",
        "rate_limit_per_minute: 600\n  max_attempts: 0\n  request_timeout_secs: 0",
    );
    assert_eq!(
        text_errors(&text, &no_env),
        vec![
            "p.yaml:7:17: max_attempts must be at least 1",
            "p.yaml:8:25: request_timeout_secs must be at least 1",
        ]
    );
    let text = text.replace("  max_attempts: 0\n  request_timeout_secs: 0\n", "");
    assert_eq!(
        loaded(&text, &no_env).spec.source.rate_limit_per_minute,
        RateLimit::PerMinute(600)
    );
}

#[test]
fn load_reads_the_process_environment() {
    // No test sets these variables; `load` must report them unset.
    let errors = match load(&Path::new(DIR).join("missing_env.yaml")) {
        Ok(_) => return, // The variables happen to be set where the tests run.
        Err(errors) => errors,
    };
    assert!(
        errors.0.iter().any(|e| e.message.contains("`SINCE`")),
        "{errors}"
    );
}

#[test]
fn shipped_example_pipelines_are_valid() {
    let entries = match std::fs::read_dir("pipelines") {
        Ok(entries) => entries,
        Err(_) => return, // No examples in this checkout.
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml")
            && let Err(e) = load_with(&path, &test_env)
        {
            panic!("{e}");
        }
    }
}

#[test]
fn columns_and_pii_rules() {
    let stream = "  - name: a\n    endpoint: /a\n    fields: [id, mail]\n    columns:\n      mail: { type: string, pii: hash }\n      nope: { pii: drop }\n";
    assert_eq!(
        text_errors(&with_stream(stream), &test_env),
        vec![
            "p.yaml:11:34: column `mail` is hashed but the pipeline has no pii_key (e.g. \
             `pii_key: ${LUCCA_PII_KEY}`) nor pii_key_file",
            "p.yaml:12:7: columns: `nope` is not a column of this stream (its columns: id, mail)",
        ]
    );
    let with_key = format!(
        "{}pii_key: ${{SECRET_PII}}\n",
        with_stream(&stream.replace("      nope: { pii: drop }\n", ""))
    );
    let env = |name: &str| (name == "SECRET_PII").then(|| "s3cr3t-pii-key".to_owned());
    let pipeline = loaded(&with_key, &env);
    let key = pipeline
        .pii_key()
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("a key"));
    assert_eq!(key.expose(), "s3cr3t-pii-key");
    assert!(
        !format!("{:?}", pipeline.spec).contains("s3cr3t"),
        "the PII key never shows in Debug output"
    );
    let both = format!("{with_key}pii_key_file: /run/secrets/pii\n");
    assert_eq!(
        text_errors(&both, &env),
        vec!["p.yaml:15:1: set either pii_key or pii_key_file, not both"]
    );
}

#[test]
fn a_dropped_key_or_partition_column_is_refused() {
    let text = "version: 1\nname: t\nsource:\n  base_url: https://acme.ilucca.net\n  api_key: k\n\
                streams:\n  - name: a\n    endpoint: /a\n    fields: [id, mail, site]\n    \
                primary_key: mail\n    partition_by: [site]\n    columns:\n      \
                mail: { pii: drop }\n      site: { pii: drop }\n\
                destination:\n  parquet: { dir: out }\n";
    assert_eq!(
        text_errors(text, &test_env),
        vec![
            "p.yaml:10:18: primary_key field `mail` is dropped (column `mail` has pii: drop): \
             merges and child tables need the key; hash it instead (pii: hash)",
            "p.yaml:11:20: partition_by column `site` has pii: drop: it is not written",
        ]
    );
}

#[test]
fn two_fields_in_one_column_are_refused() {
    let stream = "  - name: a\n    endpoint: /a\n    fields: [id, managerId, \"manager[id,name]\", cultureID, cultureId]\n";
    assert_eq!(
        text_errors(&with_stream(stream), &test_env),
        vec![
            "p.yaml:9:13: fields `managerId` and `manager.id` both make column `manager_id`: \
             store one under another name (columns: { manager_id_2: { path: manager.id } })"
        ]
    );
    // Renamed, they are two columns.
    let renamed = format!("{stream}    columns: {{ manager_ref: {{ path: manager.id }} }}\n");
    let _ = loaded(&with_stream(&renamed), &test_env);
}

// ------------------------------------------------------------------ catalog

fn catalog_pipeline(streams: &str) -> String {
    format!(
        "version: 1\nname: t\nsource:\n  base_url: https://acme.ilucca.net\n  api_key: k\n\
         streams:\n{streams}destination:\n  duckdb: {{ path: x.duckdb }}\n"
    )
}

#[test]
fn a_catalog_stream_inherits_and_overrides() {
    let text = catalog_pipeline(
        "  - endpoint: users\n\
         \x20   write_mode: merge\n\
         \x20   page_size: 200\n\
         \x20   params: { formerEmployees: \"false\", x: y }\n\
         \x20   columns: { mail: { pii: drop }, birth_date: { type: date } }\n\
         \x20 - name: depts\n\
         \x20   endpoint: departments\n\
         \x20   fields: [id, name]\n\
         \x20 - endpoint: legal-units\n",
    );
    let p = parse(Path::new("p.yaml"), &text, &no_env).unwrap_or_else(|e| panic!("{e}"));
    let users = &p.streams[0];
    assert_eq!(users.name(), "users");
    assert_eq!(users.spec.endpoint, "/api/v3/users");
    assert_eq!(users.catalog.map(|e| e.name.as_str()), Some("users"));
    assert_eq!(users.page_size, 200);
    assert_eq!(users.page_by, PageBy::Id);
    assert_eq!(users.spec.params["formerEmployees"], "false");
    assert_eq!(users.spec.params["x"], "y");
    assert_eq!(users.primary_key, vec!["id"]);
    let inc = users
        .spec
        .incremental
        .as_ref()
        .map(|i| i.cursor_field.as_str());
    assert_eq!(inc, Some("modifiedAt"));
    assert_eq!(users.spec.columns["mail"].pii, PiiPolicy::Drop);
    assert_eq!(
        users.spec.columns["modified_at"].data_type,
        Some(DeclaredType::Timestamp)
    );
    // The catalog's type is a likely one; the file's is the user's word.
    assert!(users.spec.columns["modified_at"].type_from_catalog);
    assert_eq!(
        users.spec.columns["birth_date"].data_type,
        Some(DeclaredType::Date)
    );
    assert!(!users.spec.columns["birth_date"].type_from_catalog);
    let depts = &p.streams[1];
    assert_eq!(depts.name(), "depts");
    assert_eq!(depts.spec.fields, vec!["id", "name"]);
    // Types only for the columns the overridden fields still have.
    assert!(!depts.spec.columns.contains_key("parent_id"));
    assert_eq!(
        depts.spec.columns["id"].data_type,
        Some(DeclaredType::Bigint)
    );
    let units = &p.streams[2];
    assert_eq!(units.name(), "legal_units");
    assert_eq!(units.paging, PagingStyle::V4);
    assert_eq!(units.page_size, 100);
    assert!(units.spec.incremental.is_none());
}

#[test]
fn leaves_inherit_their_slice_and_owner_filter() {
    let text = catalog_pipeline("  - endpoint: leaves\n    slice: { from: 2024-01-01 }\n");
    let p = parse(Path::new("p.yaml"), &text, &no_env).unwrap_or_else(|e| panic!("{e}"));
    let leaves = &p.streams[0];
    assert_eq!(leaves.spec.params["leavePeriod.ownerId"], "greaterthan,0");
    let slice = leaves.slice.as_ref().unwrap_or_else(|| panic!("no slice"));
    assert_eq!(slice.field, "date");
    assert_eq!(slice.from.to_string(), "2024-01-01");
    assert_eq!(slice.step, Step::Months(1));
    assert_eq!(slice.lookback, Step::Months(3));
    assert_eq!(slice.to, DateBound::Today(Some((Step::Years(1), true))));
}

#[test]
fn a_bad_slice_on_the_required_field_is_one_error() {
    // Sliced on `date`, as leaves require, with a bad step: the step is
    // the error, not a missing `date` filter.
    let text = catalog_pipeline(
        "  - endpoint: leaves\n\
         \x20   slice: { field: date, step: 1 fortnight }\n\
         \x20 - name: l2\n\
         \x20   endpoint: leaves\n\
         \x20   slice: { from: 2020-13-01 }\n",
    );
    assert_eq!(
        text_errors(&text, &no_env),
        vec![
            "p.yaml:8:33: slice step: `1 fortnight` is not a step: write `N days`, `N weeks`, \
             `N months` or `N years`, e.g. `1 month`",
            "p.yaml:11:20: slice from: `2020-13-01` is not a date: write yyyy-mm-dd",
        ]
    );
}

#[test]
fn catalog_and_slice_errors_are_located() {
    let text = catalog_pipeline(
        "  - endpoint: usres\n\
         \x20 - endpoint: leaves\n\
         \x20   slice: { field: createdAt, step: 1 fortnight }\n\
         \x20 - name: t\n\
         \x20   endpoint: /api/v3/timeentries\n\
         \x20   params: { startsAt: x }\n\
         \x20   slice: { field: startsAt, from: 2024-02-30, to: 2023-01-01, step: 1 week }\n\
         \x20 - endpoint: users\n\
         \x20   page_size: 1001\n",
    );
    assert_eq!(
        text_errors(&text, &no_env),
        vec![
            "p.yaml:7:5: streams[0]: missing field `name` (only a catalog endpoint, such as \
             `endpoint: users`, names its stream by default)",
            "p.yaml:7:15: `usres` is not a catalog endpoint: did you mean `users`? \
             (`lucca-sync endpoints` lists them; a path on the tenant starts with `/`)",
            "p.yaml:8:15: `leaves` requires a `date` filter: set it in `params`, or slice on it \
             (`slice: { field: date, ... }`)",
            "p.yaml:9:38: slice step: `1 fortnight` is not a step: write `N days`, `N weeks`, \
             `N months` or `N years`, e.g. `1 month`",
            "p.yaml:12:15: params must not set `startsAt`: the stream is sliced on it (see `slice`)",
            "p.yaml:13:37: slice from: `2024-02-30` is not a date: write yyyy-mm-dd",
            "p.yaml:15:16: page_size 1001 is above the maximum of 1000 that `users` accepts",
        ]
    );
}
