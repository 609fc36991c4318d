//! Golden tests of the transform: each directory of
//! `tests/fixtures/transform/` holds a stream (`stream.yaml`, as in a
//! pipeline), the pages the API sent (`pages.json`, an array of v3 bodies),
//! optionally the destination's existing tables (`existing.json`, table ->
//! columns) and the expected result (`expected.txt`: every table's columns,
//! types and rows as JSON lines, the schema changes, the nulled values, or
//! the error). `UPDATE_GOLDEN=1 cargo test --test transform_golden`
//! rewrites the expected files; review the diff before committing it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write;
use std::path::{Path, PathBuf};

use lucca_sync::extract::Page;
use lucca_sync::extract::paging::parse_envelope;
use lucca_sync::json::RecordTape;
use lucca_sync::pipeline::{PagingStyle, Secret, StreamSpec, parse_fields};
use lucca_sync::transform::{ColumnPolicies, StreamTransform, TableBatch, TransformError};

const PII_KEY: &str = "golden-test-key";

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/transform");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("stream.yaml").is_file())
        .collect();
    dirs.sort();
    dirs
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs one case and renders what a user would look at.
fn render(dir: &Path) -> String {
    let spec: StreamSpec = serde_norway::from_str(&read(&dir.join("stream.yaml")))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let fields = parse_fields(&spec.fields).unwrap_or_else(|e| panic!("fields: {e:?}"));
    let existing: HashMap<String, HashSet<String>> =
        match std::fs::read_to_string(dir.join("existing.json")) {
            Ok(text) => {
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("existing.json: {e}"))
            }
            Err(_) => HashMap::new(),
        };
    // Each page's text as written (key order matters: it is column order).
    let pages_text = read(&dir.join("pages.json"));
    let pages: Vec<&serde_json::value::RawValue> =
        serde_json::from_str(&pages_text).unwrap_or_else(|e| panic!("pages.json: {e}"));
    // The tables' columns, by name only (no type to keep).
    let existing = existing
        .into_iter()
        .map(|(table, columns)| (table, columns.into_iter().map(|c| (c, None)).collect()))
        .collect();
    let policies = ColumnPolicies::of(&spec, Some(Secret::new(PII_KEY))).with_existing(existing);
    let mut transform = StreamTransform::new(&spec.name, &fields)
        .with_policies(policies)
        .with_warmup_rows(3);
    let mut batches: Vec<TableBatch> = Vec::new();
    let mut error: Option<TransformError> = None;
    for (i, body) in pages.iter().enumerate() {
        let body = body.get().to_owned();
        let parsed = parse_envelope(&body, PagingStyle::V3, RecordTape::default())
            .unwrap_or_else(|e| panic!("{e:?}"));
        let page = Page::new(
            i as u64 + 1,
            format!("http://127.0.0.1/api/v3/users?page={}", i + 1),
            body,
            parsed.records,
        );
        match transform.push_page(&page) {
            Ok(out) => batches.extend(out),
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    if error.is_none() {
        match transform.finish() {
            Ok(out) => batches.extend(out),
            Err(e) => error = Some(e),
        }
    }
    let mut by_table: BTreeMap<String, Vec<TableBatch>> = BTreeMap::new();
    for b in batches {
        by_table.entry(b.table.clone()).or_default().push(b);
    }
    let mut out = String::new();
    for (table, batches) in &by_table {
        let _ = writeln!(out, "table {table}");
        if let Some(last) = batches.last() {
            for field in last.batch.schema().fields() {
                let _ = writeln!(out, "  {}: {}", field.name(), field.data_type());
            }
        }
        let mut buf = Vec::new();
        {
            let mut writer = arrow::json::LineDelimitedWriter::new(&mut buf);
            for b in batches {
                writer
                    .write(&without_time_zones(&b.batch))
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            writer.finish().unwrap_or_else(|e| panic!("{e}"));
        }
        for line in String::from_utf8_lossy(&buf).lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    for change in transform.schema_changes() {
        let _ = writeln!(
            out,
            "schema change: {} `{}` -> {}.{}",
            change.action, change.field, change.table, change.column
        );
    }
    if transform.nulled_values() > 0 {
        let _ = writeln!(out, "nulled values: {}", transform.nulled_values());
    }
    if let Some(e) = error {
        let _ = writeln!(out, "error: {e}");
    }
    out
}

/// TIMESTAMPTZ columns as plain UTC timestamps: arrow's JSON writer reads
/// only offset time zones without chrono-tz (the column types are shown
/// above the rows).
fn without_time_zones(batch: &arrow::array::RecordBatch) -> arrow::array::RecordBatch {
    use arrow::datatypes::{DataType, Field, Schema};
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        match field.data_type() {
            DataType::Timestamp(unit, Some(_)) => {
                let to = DataType::Timestamp(*unit, None);
                let cast = arrow::compute::cast(column, &to).unwrap_or_else(|e| panic!("{e}"));
                fields.push(Field::new(field.name(), to, true));
                columns.push(cast);
            }
            _ => {
                fields.push(field.as_ref().clone());
                columns.push(column.clone());
            }
        }
    }
    arrow::array::RecordBatch::try_new(std::sync::Arc::new(Schema::new(fields)), columns)
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn golden_cases() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    let all = cases();
    assert!(all.len() >= 8, "the golden cases are missing");
    for dir in all {
        let actual = render(&dir);
        let expected_path = dir.join("expected.txt");
        if update {
            std::fs::write(&expected_path, &actual).unwrap_or_else(|e| panic!("{e}"));
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != actual {
            failures.push(format!(
                "{}:\n--- expected\n{expected}\n--- actual\n{actual}",
                dir.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
