//! The command line as a person uses it: `validate` errors located as
//! `file:line:col: message`, exit codes, `--help` and `--version`.

mod common;

use std::process::Command;

use common::text;

fn lucca_sync(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lucca-sync"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("LUCCA_BASE_URL")
        .env_remove("LUCCA_API_KEY")
        .env_remove("SINCE")
        .env_remove("OUT_DIR")
        .output()
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn validate_reports_a_syntax_error_with_line_and_column() {
    let out = lucca_sync(&["validate", "tests/fixtures/pipelines/bad_syntax.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr).trim_end(),
        "tests/fixtures/pipelines/bad_syntax.yaml:10:5: did not find expected ',' or '}', while parsing a flow mapping at line 9 column 13"
    );
}

#[test]
fn validate_reports_an_unknown_key_with_line_and_column() {
    let out = lucca_sync(&["validate", "tests/fixtures/pipelines/unknown_key.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).starts_with(
            "tests/fixtures/pipelines/unknown_key.yaml:9:5: streams[0]: unknown field `pagesize`, expected one of"
        ),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn validate_names_a_missing_environment_variable_where_it_is_used() {
    let out = lucca_sync(&["validate", "tests/fixtures/pipelines/missing_env.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("tests/fixtures/pipelines/missing_env.yaml:5:14: environment variable `LUCCA_BASE_URL` is not set"),
        "{stderr}"
    );
}

#[test]
fn run_with_an_invalid_pipeline_sends_nothing_and_exits_2() {
    let out = lucca_sync(&["run", "tests/fixtures/pipelines/page_size_too_big.yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

/// The metrics file of an invalid run says exit 2: last night's file,
/// left as it was, would tell the alerting that all is well.
#[test]
fn an_invalid_pipeline_still_writes_its_exit_code_to_the_reports() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let metrics = dir.path().join("lucca_sync.prom");
    let summary = dir.path().join("summary.json");
    std::fs::write(&metrics, "lucca_sync_run_exit_code 0\n").unwrap_or_else(|e| panic!("{e}"));
    let out = lucca_sync(&[
        "run",
        "tests/fixtures/pipelines/page_size_too_big.yaml",
        "--metrics-file",
        metrics.to_str().unwrap_or_default(),
        "--summary-json",
        summary.to_str().unwrap_or_default(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let prom = std::fs::read_to_string(&metrics).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        prom.lines().any(|l| l == "lucca_sync_run_exit_code 2"),
        "{prom}"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&summary).unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(json["exit_code"], 2, "{json}");
}

#[test]
fn shipped_pipelines_validate() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut shipped: Vec<String> = std::fs::read_dir(root.join("pipelines"))
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
        .map(|e| format!("pipelines/{}", e.file_name().to_string_lossy()))
        .filter(|p| p.ends_with(".yaml"))
        .collect();
    shipped.sort();
    for name in [
        "users",
        "organization",
        "absences",
        "time",
        "expenses",
        "all",
    ] {
        assert!(
            shipped.contains(&format!("pipelines/{name}.yaml")),
            "{shipped:?}"
        );
    }
    for path in &shipped {
        let text = std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            text.starts_with("# yaml-language-server: $schema=../schema/pipeline.schema.json\n"),
            "{path} lacks the modeline"
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_lucca-sync"))
        .arg("validate")
        .args(&shipped)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("LUCCA_BASE_URL", "https://acme.ilucca.net")
        .env("LUCCA_API_KEY", "k")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn help_lists_the_commands_and_exit_codes() {
    let out = lucca_sync(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    for word in [
        "run",
        "validate",
        "check",
        "demo",
        "Exit codes:",
        "3    the API key was rejected",
    ] {
        assert!(help.contains(word), "{word} missing from:\n{help}");
    }
    let out = lucca_sync(&["--version"]);
    assert_eq!(
        text(&out.stdout).trim(),
        concat!("lucca-sync ", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn a_usage_error_exits_2() {
    let out = lucca_sync(&["run"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn json_schema_is_the_committed_schema_file() {
    let out = lucca_sync(&["json-schema"]);
    assert_eq!(out.status.code(), Some(0));
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schema/pipeline.schema.json"
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        text(&out.stdout),
        committed,
        "schema/pipeline.schema.json is stale: lucca-sync json-schema > schema/pipeline.schema.json"
    );
}

#[test]
fn the_schema_accepts_the_shipped_pipelines_and_rejects_invalid_ones() {
    let Some(python) = common::reader("current") else {
        return;
    };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut shipped: Vec<std::path::PathBuf> = ["pipelines", "deploy/kubernetes/pipelines"]
        .iter()
        .flat_map(|d| {
            std::fs::read_dir(root.join(d))
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    shipped.sort();
    assert!(shipped.len() >= 3, "{shipped:?}");
    let script = "import json, sys, yaml, jsonschema\n\
        schema = json.load(open(sys.argv[1]))\n\
        for path in sys.argv[2:]:\n\
        \x20   errors = list(jsonschema.Draft202012Validator(schema).iter_errors(yaml.safe_load(open(path))))\n\
        \x20   print(path.rsplit('/', 1)[-1], 'valid' if not errors else 'invalid: ' + errors[0].message)";
    let schema = root.join("schema/pipeline.schema.json");
    let mut args: Vec<&std::path::Path> = vec![&schema];
    args.extend(shipped.iter().map(|p| p.as_path()));
    let answer = common::python(&python, script, &args);
    for line in answer.lines() {
        assert!(line.ends_with(" valid"), "{answer}");
    }
    assert_eq!(answer.lines().count(), shipped.len());

    let invalid = [
        root.join("tests/fixtures/pipelines/unknown_key.yaml"),
        root.join("tests/fixtures/pipelines/wrong_type.yaml"),
    ];
    let mut args: Vec<&std::path::Path> = vec![&schema];
    args.extend(invalid.iter().map(|p| p.as_path()));
    let answer = common::python(&python, script, &args);
    assert!(
        answer.contains("unknown_key.yaml invalid: Additional properties are not allowed ('pagesize' was unexpected)"),
        "{answer}"
    );
    assert!(answer.contains("wrong_type.yaml invalid: "), "{answer}");
}

#[test]
fn the_readme_documents_every_field_of_the_schema() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("schema/pipeline.schema.json"))
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap_or_else(|e| panic!("{e}"));
    let props = |pointer: &str| -> Vec<String> {
        schema
            .pointer(pointer)
            .and_then(|p| p.as_object())
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_else(|| panic!("no {pointer} in the schema"))
    };
    let mut paths: Vec<String> = Vec::new();
    for (prefix, pointer) in [
        ("", "/properties"),
        ("source.", "/$defs/SourceSpec/properties"),
        ("streams[].", "/$defs/StreamSpec/properties"),
        ("streams[].slice.", "/$defs/SliceSpec/properties"),
        ("destination.duckdb.", "/$defs/DuckdbDestination/properties"),
        (
            "destination.parquet.",
            "/$defs/ParquetDestination/properties",
        ),
    ] {
        paths.extend(props(pointer).into_iter().map(|p| format!("{prefix}{p}")));
    }
    let missing: Vec<&String> = paths
        .iter()
        .filter(|p| !["source", "streams", "destination"].contains(&p.as_str()))
        .filter(|p| !readme.contains(&format!("`{p}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "README's pipeline reference lacks {missing:?}"
    );
}

#[test]
fn other_lucca_sync_variables_do_not_break_the_settings() {
    let out = Command::new(env!("CARGO_BIN_EXE_lucca-sync"))
        .args(["validate", "tests/fixtures/pipelines/valid_users.yaml"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("LUCCA_API_KEY", "k")
        .env("LUCCA_BASE_URL", "https://acme.ilucca.net")
        .env("LUCCA_SYNC_LOG", "debug")
        .env("LUCCA_SYNC_SOMETHING_OF_THE_DEPLOYMENT", "1")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn endpoints_lists_the_catalog_and_details_one() {
    let out = lucca_sync(&["endpoints"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let list = text(&out.stdout);
    assert!(list.starts_with("NAME"), "{list}");
    for line in [
        "users ",
        "/api/v3/leaves",
        "Absences, one record per half day",
    ] {
        assert!(list.contains(line), "{line} missing from:\n{list}");
    }
    assert!(list.lines().count() > 21, "{list}");
    let units = list
        .lines()
        .find(|l| l.starts_with("legal-units "))
        .unwrap_or_default();
    assert!(
        units.contains("/organization/structure/api/legal-units") && units.contains(" v4 "),
        "{units}"
    );

    let out = lucca_sync(&["endpoints", "leaves"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let detail = text(&out.stdout);
    for line in [
        "path              /api/v3/leaves",
        "paging            v3 (pages of up to 10000, 1000 by default)",
        "primary key       id",
        "required filters  date, leavePeriod.ownerId",
        "params            leavePeriod.ownerId=greaterthan,0",
        "slice             date from 2020-01-01 to today + 1 year, step 1 month, lookback 3 months",
        "leavePeriod.ownerId",
        "leave_period_owner_id",
        "double",
    ] {
        assert!(detail.contains(line), "{line} missing from:\n{detail}");
    }
    let out = lucca_sync(&["endpoints", "users"]);
    assert!(text(&out.stdout).contains("modifiedAt=since"));

    let out = lucca_sync(&["endpoints", "usres"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("`usres` is not a catalog endpoint: did you mean `users`?"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn validate_points_at_an_unknown_catalog_endpoint() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("p.yaml");
    std::fs::write(
        &path,
        "version: 1\nname: t\nsource:\n  base_url: https://acme.ilucca.net\n  api_key: k\n\
         streams:\n  - endpoint: leave-type\n\
         destination:\n  duckdb: { path: x.duckdb }\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let shown = path.display().to_string();
    let out = lucca_sync(&["validate", &shown]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr).trim_end(),
        format!(
            "{shown}:7:5: streams[0]: missing field `name` (only a catalog endpoint, such as \
             `endpoint: users`, names its stream by default)\n\
             {shown}:7:15: `leave-type` is not a catalog endpoint: did you mean `leave-types`? \
             (`lucca-sync endpoints` lists them; a path on the tenant starts with `/`)"
        )
    );
}

#[test]
fn output_piped_into_a_closed_pipe_ends_quietly() {
    // `lucca-sync endpoints | head -1`: the reader goes away early.
    let mut child = Command::new(env!("CARGO_BIN_EXE_lucca-sync"))
        .arg("endpoints")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(out.status.code(), Some(101), "{stderr}");
}

/// `check` says what `run` says of a pipeline error: exit 2, nothing sent.
#[test]
fn check_of_a_pipeline_with_an_empty_key_file_exits_2_like_run() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let key = dir.path().join("key");
    std::fs::write(&key, "").unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("p.yaml");
    let yaml = format!(
        "version: 1\nname: t\nsource:\n  base_url: http://127.0.0.1:9\n  api_key_file: {}\nstreams:\n  - name: users\n    endpoint: /api/v3/users\n    fields: [id]\ndestination:\n  duckdb: {{ path: {} }}\n",
        key.display(),
        dir.path().join("out.duckdb").display()
    );
    std::fs::write(&path, yaml).unwrap_or_else(|e| panic!("{e}"));
    let path = path.to_str().unwrap_or_default();
    for command in ["run", "check"] {
        let out = lucca_sync(&[command, path]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{command}: {}",
            text(&out.stderr)
        );
    }
}
