//! The catalog is consistent: every entry is complete, within its paging
//! style's limits, and validates as a stream on its own.

use std::collections::BTreeSet;
use std::path::Path;

use super::*;
use crate::pipeline::{contains_path, leaf_paths, naming::column_name, parse_fields};

fn all() -> &'static [Endpoint] {
    endpoints().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn has_every_endpoint_of_issue_6() {
    let names: BTreeSet<&str> = all().iter().map(|e| e.name.as_str()).collect();
    for name in [
        "users",
        "departments",
        "establishments",
        "legal-units",
        "work-contracts",
        "axes",
        "axis-sections",
        "roles",
        "workcycles",
        "userlogs",
        "leaves",
        "leave-requests",
        "leave-types",
        "timeentries",
        "timesheets",
        "expense-claims",
        "expense-items",
        "expense-natures",
        "expense-temp-items",
        "expense-receipts",
        "work-locations",
        "user-locations",
        "extension-user-definitions",
    ] {
        assert!(names.contains(name), "{name} is missing");
    }
    assert_eq!(names.len(), all().len(), "duplicate names");
}

#[test]
fn every_entry_is_consistent() {
    for e in all() {
        let n = &e.name;
        assert!(
            e.name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{n}: names are lowercase kebab-case"
        );
        assert!(
            crate::pipeline::naming::column_name(&e.default_stream_name())
                == e.default_stream_name(),
            "{n}: the default stream name is a table name"
        );
        assert!(e.path.starts_with('/'), "{n}: path");
        assert!(
            !e.description.is_empty() && !e.description.contains('\n'),
            "{n}"
        );
        assert!(
            (1..=e.paging.max_page_size()).contains(&e.max_page_size),
            "{n}: max_page_size {} outside 1..={} of {}",
            e.max_page_size,
            e.paging.max_page_size(),
            e.paging.name()
        );
        let tree = parse_fields(&e.fields).unwrap_or_else(|_| panic!("{n}: fields"));
        for key in e.primary_key.fields() {
            assert!(
                contains_path(&tree, key),
                "{n}: primary key {key} not in fields"
            );
        }
        if let Some(cursor) = &e.cursor {
            assert!(
                contains_path(&tree, cursor),
                "{n}: cursor {cursor} not in fields"
            );
        }
        let columns: Vec<String> = leaf_paths(&tree).iter().map(|p| column_name(p)).collect();
        for column in e.types.keys() {
            assert!(
                columns.contains(column),
                "{n}: typed column {column} not in fields"
            );
        }
        for filter in &e.required_filters {
            let by_slice = e
                .slice
                .as_ref()
                .is_some_and(|s| s.field.as_deref() == Some(filter.as_str()));
            assert!(
                by_slice || e.params.contains_key(filter),
                "{n}: required filter {filter} has no default"
            );
        }
    }
}

/// A type declared for a field the facts file does not document would fail
/// every run on a tenant whose values differ (a string id, a zoned
/// timestamp): only users and departments, whose objects the facts file
/// shows, declare other types than DOUBLE quantities (which any number or
/// numeric text fits).
#[test]
fn undocumented_fields_declare_no_type_but_double() {
    for e in all() {
        if ["users", "departments"].contains(&e.name.as_str()) {
            continue;
        }
        for (column, declared) in &e.types {
            assert_eq!(
                *declared,
                crate::pipeline::DeclaredType::Double,
                "{}: {column}",
                e.name
            );
        }
    }
}

/// Each entry, as `endpoint: NAME` alone (replace and merge), is a valid
/// stream.
#[test]
fn every_entry_validates_as_a_stream() {
    for e in all() {
        for write_mode in ["replace", "merge"] {
            let text = format!(
                "version: 1\nname: t\nsource:\n  base_url: https://acme.ilucca.net\n  api_key: k\n\
                 streams:\n  - endpoint: {}\n    write_mode: {write_mode}\n\
                 destination:\n  duckdb: {{ path: x.duckdb }}\n",
                e.name
            );
            let p = crate::pipeline::parse(Path::new("p.yaml"), &text, &|_| None)
                .unwrap_or_else(|errors| panic!("{}: {errors}", e.name));
            let s = &p.streams[0];
            assert_eq!(s.spec.endpoint, e.path);
            assert_eq!(s.spec.name, e.default_stream_name());
            assert_eq!(
                s.page_size,
                e.max_page_size.min(e.paging.default_page_size())
            );
            assert_eq!(s.slice.is_some(), e.slice.is_some());
            let incremental = s.spec.incremental.as_ref().map(|i| i.cursor_field.clone());
            let expected = e.cursor.clone().filter(|_| write_mode == "merge");
            assert_eq!(incremental, expected, "{}", e.name);
        }
    }
}

#[test]
fn suggestions_and_listing() {
    assert_eq!(suggest("usres"), Some("users"));
    assert_eq!(suggest("legal_units"), Some("legal-units"));
    assert_eq!(suggest("leave"), Some("leaves"));
    assert_eq!(suggest("payroll-exports-of-2025"), None);
    let list = list_text(all());
    assert!(list.starts_with("NAME"));
    assert_eq!(list.lines().count(), all().len() + 1);
    let users = find("users")
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("users"));
    let detail = detail_text(users);
    assert!(detail.contains("modifiedAt=since"), "{detail}");
    assert!(detail.contains("dtContractEnd"), "{detail}");
    assert!(detail.contains("timestamp"), "{detail}");
}
