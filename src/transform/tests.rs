//! Golden tests of the transform on hand-written pages.

use arrow::array::{
    Array, AsArray, BooleanArray, Date32Array, Float64Array, Int64Array, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, TimeUnit};

use super::*;
use crate::extract::paging::parse_envelope;
use crate::json::RecordTape;
use crate::pipeline::PagingStyle;

fn page(json: &str) -> Page {
    let body = json.to_owned();
    let parsed = parse_envelope(&body, PagingStyle::V3, RecordTape::default())
        .unwrap_or_else(|_| panic!("envelope"));
    Page::new(
        1,
        "http://127.0.0.1/api/v3/users?paging=0,1000".into(),
        body,
        parsed.records,
    )
}

fn field(name: &str, children: &[&str]) -> FieldNode {
    FieldNode {
        name: name.into(),
        children: children.iter().map(|c| field(c, &[])).collect(),
    }
}

/// The batch of `table` among a transform's output.
fn batch_of(batches: &[TableBatch], table: &str) -> RecordBatch {
    batches
        .iter()
        .find(|b| b.table == table)
        .map(|b| b.batch.clone())
        .unwrap_or_else(|| panic!("no batch for table {table}"))
}

fn run(fields: &[FieldNode], json: &str) -> RecordBatch {
    let mut t = StreamTransform::new("users", fields);
    let first = t.push_page(&page(json)).unwrap_or_else(|e| panic!("{e}"));
    assert!(first.is_empty(), "buffered until warm-up or finish");
    batch_of(&t.finish().unwrap_or_else(|e| panic!("{e}")), "users")
}

const USERS: &str = r#"{"data":{"count":3,"items":[
 {"id":416,"firstName":"Zoë","lastName":"DOE","birthDate":"1989-12-22T00:00:00",
  "modifiedAt":"2015-09-07T10:20:06.583","dtContractEnd":null,"startsOn":"2020-02-01",
  "isActive":true,"rate":1.5,"cultureID":1036,
  "manager":{"id":383,"name":"Roger Smith","url":"x"},"userWorkCycles":[{"id":288}],
  "extendedData":{"e_bloodType":"AB"}},
 {"id":417,"firstName":"山田","lastName":"太郎","birthDate":null,"modifiedAt":"2016-01-01T00:00:00",
  "startsOn":"2021-03-04","isActive":false,"rate":2,"cultureId":1033,"manager":null},
 {"id":418,"firstName":"Ольга\"q","modifiedAt":"2017-01-01T08:00:00","manager":{"id":416,"name":"Zoë DOE"}}
]}}"#;

#[test]
fn types_flattening_and_names() {
    let fields = vec![
        field("id", &[]),
        field("firstName", &[]),
        field("manager", &["id", "name"]),
    ];
    let batch = run(&fields, USERS);
    let schema = batch.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        names,
        [
            "id",
            "first_name",
            "manager_id",
            "manager_name",
            "last_name",
            "birth_date",
            "modified_at",
            "dt_contract_end",
            "starts_on",
            "is_active",
            "rate",
            "culture_id",
            "manager_url",
            "user_work_cycles",
            "extended_data_e_blood_type",
        ]
    );
    let ty = |n: &str| {
        schema
            .field_with_name(n)
            .map(|f| f.data_type().clone())
            .unwrap_or(DataType::Null)
    };
    assert_eq!(ty("id"), DataType::Int64);
    assert_eq!(ty("manager_id"), DataType::Int64);
    assert_eq!(
        ty("birth_date"),
        DataType::Timestamp(TimeUnit::Microsecond, None)
    );
    assert_eq!(ty("starts_on"), DataType::Date32);
    assert_eq!(ty("is_active"), DataType::Boolean);
    assert_eq!(ty("rate"), DataType::Float64);
    // All null in the warm-up: a VARCHAR column, not a NULL-typed one.
    assert_eq!(ty("dt_contract_end"), DataType::Utf8);

    let col = |n: &str| {
        batch
            .column_by_name(n)
            .unwrap_or_else(|| panic!("{n}"))
            .clone()
    };
    let ids = col("id");
    let ids = ids
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap_or_else(|| panic!("ids"));
    assert_eq!(ids.values(), &[416, 417, 418]);
    let names = col("first_name");
    let names = names.as_string::<i32>();
    assert_eq!(names.value(0), "Zoë");
    assert_eq!(names.value(1), "山田");
    assert_eq!(names.value(2), "Ольга\"q");
    let managers = col("manager_id");
    let managers = managers
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap_or_else(|| panic!("m"));
    assert_eq!(managers.value(0), 383);
    assert!(managers.is_null(1));
    assert_eq!(managers.value(2), 416);
    let modified = col("modified_at");
    let modified = modified
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .unwrap_or_else(|| panic!("ts"));
    // 2015-09-07T10:20:06.583 as wall time.
    assert_eq!(modified.value(0), 1_441_621_206_583_000);
    let starts = col("starts_on");
    let starts = starts
        .as_any()
        .downcast_ref::<Date32Array>()
        .unwrap_or_else(|| panic!("d"));
    assert_eq!(starts.value(0), 18293);
    let active = col("is_active");
    let active = active
        .as_any()
        .downcast_ref::<BooleanArray>()
        .unwrap_or_else(|| panic!("b"));
    assert!(active.value(0) && !active.value(1) && active.is_null(2));
    let rate = col("rate");
    let rate = rate
        .as_any()
        .downcast_ref::<Float64Array>()
        .unwrap_or_else(|| panic!("f"));
    assert_eq!(rate.value(1), 2.0);
    // cultureID and cultureId are one column.
    let culture = col("culture_id");
    let culture = culture
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap_or_else(|| panic!("c"));
    assert_eq!((culture.value(0), culture.value(1)), (1036, 1033));
    let cycles = col("user_work_cycles");
    let cycles = cycles
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap_or_else(|| panic!("j"));
    assert_eq!(cycles.value(0), r#"[{"id":288}]"#);
}

#[test]
fn a_value_that_does_not_fit_is_an_error_not_a_null() {
    // After the first batch has fixed the column's type (within it, the
    // column would widen to VARCHAR).
    let first = r#"{"data":{"items":[{"id":1,"modifiedAt":"2015-09-07T10:20:06"}]}}"#;
    let json = r#"{"data":{"items":[{"id":2,"modifiedAt":"yesterday"}]}}"#;
    let mut t = StreamTransform::new("users", &[]).with_warmup_rows(1);
    let _ = t.push_page(&page(first)).unwrap_or_else(|e| panic!("{e}"));
    match t.push_page(&page(json)) {
        Err(e) => assert_eq!(
            e.to_string(),
            "stream `users`: record id 2: field `modifiedAt`: value \"yesterday\" does not fit column `modified_at` of type Timestamp (page 1: http://127.0.0.1/api/v3/users?paging=0,1000)"
        ),
        Ok(_) => panic!("accepted a bad value"),
    }
}

#[test]
fn nulls_first_then_values_keep_the_type_and_rows_align() {
    let mut t = StreamTransform::new("users", &[field("id", &[]), field("dtContractEnd", &[])])
        .with_warmup_rows(2);
    let first = page(r#"{"data":{"items":[{"id":1,"dtContractEnd":null},{"id":2}]}}"#);
    let batch = batch_of(
        &t.push_page(&first).unwrap_or_else(|e| panic!("{e}")),
        "users",
    );
    assert_eq!(batch.num_rows(), 2);
    // Still no value after the warm-up: VARCHAR, which holds any later value.
    assert_eq!(batch.schema().field(1).data_type(), &DataType::Utf8);
    let second =
        page(r#"{"data":{"items":[{"id":3,"dtContractEnd":"2020-01-01T00:00:00","newField":7}]}}"#);
    let pending = t.push_page(&second).unwrap_or_else(|e| panic!("{e}"));
    assert!(pending.is_empty(), "one row waits for a full batch");
    let batch = batch_of(&t.finish().unwrap_or_else(|e| panic!("{e}")), "users");
    assert_eq!(
        batch.num_columns(),
        3,
        "a new field adds a column at the end"
    );
    assert_eq!(batch.schema().field(2).name(), "new_field");
}

#[test]
fn not_an_object_is_reported_with_its_page() {
    let mut t = StreamTransform::new("users", &[]);
    let err = t.push_page(&page(r#"{"data":{"items":[1]}}"#));
    assert!(matches!(
        err,
        Err(TransformError::BadRecord {
            index: 0,
            page: 1,
            ..
        })
    ));
    let message = err.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        message
            .ends_with("record 1 of the page: not a JSON object: expected a JSON object at byte 0"),
        "{message}"
    );
}

#[test]
fn an_unreadable_field_names_the_record_counted_from_one_and_its_id() {
    let mut t = StreamTransform::new("users", &[]);
    let err = t.push_page(&page(
        r#"{"data":{"items":[{"id":6,"x":1},{"id":7,"x":1e400}]}}"#,
    ));
    let message = err.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        message.contains("record 2 of the page (id 7): field `x`: number out of range"),
        "{message}"
    );
    assert!(!message.contains("not a JSON object"), "{message}");
    // A lone surrogate is no error: it reads as U+FFFD.
    let mut t = StreamTransform::new("users", &[]);
    assert!(
        t.push_page(&page(r#"{"data":{"items":[{"id":1,"name":"a\ud83d b"}]}}"#))
            .is_ok()
    );
}

fn policies(
    columns: &[(&str, Option<DeclaredType>, PiiPolicy)],
    key: Option<&str>,
) -> ColumnPolicies {
    ColumnPolicies {
        columns: columns
            .iter()
            .map(|(name, ty, pii)| {
                (
                    (*name).to_owned(),
                    ColumnSpec {
                        data_type: *ty,
                        pii: *pii,
                        path: None,
                        type_from_catalog: false,
                    },
                )
            })
            .collect(),
        pii_key: key.map(Secret::new),
        ..ColumnPolicies::default()
    }
}

fn run_with(fields: &[FieldNode], policies: ColumnPolicies, json: &str) -> (RecordBatch, u64) {
    let mut t = StreamTransform::new("users", fields).with_policies(policies);
    let _ = t.push_page(&page(json)).unwrap_or_else(|e| panic!("{e}"));
    let batch = batch_of(&t.finish().unwrap_or_else(|e| panic!("{e}")), "users");
    (batch, t.nulled_values())
}

#[test]
fn declared_types_win_over_inference() {
    let fields = vec![
        field("id", &[]),
        field("rate", &[]),
        field("cultureID", &[]),
        field("startsOn", &[]),
    ];
    let p = policies(
        &[
            ("id", Some(DeclaredType::String), PiiPolicy::Keep),
            ("rate", Some(DeclaredType::Double), PiiPolicy::Keep),
            ("culture_id", Some(DeclaredType::Bigint), PiiPolicy::Keep),
            ("starts_on", Some(DeclaredType::Timestamp), PiiPolicy::Keep),
        ],
        None,
    );
    let (batch, _) = run_with(&fields, p, USERS);
    let ty = |name: &str| {
        batch
            .schema()
            .field_with_name(name)
            .map(|f| f.data_type().clone())
            .unwrap_or_else(|e| panic!("{e}"))
    };
    assert_eq!(ty("id"), DataType::Utf8);
    assert_eq!(ty("rate"), DataType::Float64);
    assert_eq!(ty("culture_id"), DataType::Int64);
    assert_eq!(
        ty("starts_on"),
        DataType::Timestamp(TimeUnit::Microsecond, None)
    );
    let ids = batch.column_by_name("id").unwrap_or_else(|| panic!("id"));
    assert_eq!(ids.as_string::<i32>().value(0), "416");
}

#[test]
fn a_catalog_type_is_likely_not_certain_and_widens_in_the_first_batch() {
    let fields = vec![field("id", &[]), field("duration", &[])];
    let json = r#"{"data":{"items":[{"id":1,"duration":8},{"id":2,"duration":"PT1H"}]}}"#;
    let double = [("duration", Some(DeclaredType::Double), PiiPolicy::Keep)];
    // Declared in the file: the user's word, a bad value.
    let mut t = StreamTransform::new("t", &fields).with_policies(policies(&double, None));
    let err = t.push_page(&page(json)).err().map(|e| e.to_string());
    assert!(
        err.as_deref().is_some_and(|e| e.contains("\"PT1H\"")),
        "{err:?}"
    );
    // From the catalog: a likely type, widened like an inferred one.
    let mut p = policies(&double, None);
    for spec in p.columns.values_mut() {
        spec.type_from_catalog = true;
    }
    let mut t = StreamTransform::new("t", &fields).with_policies(p);
    let _ = t.push_page(&page(json)).unwrap_or_else(|e| panic!("{e}"));
    let batch = batch_of(&t.finish().unwrap_or_else(|e| panic!("{e}")), "t");
    let durations = batch
        .column_by_name("duration")
        .unwrap_or_else(|| panic!("duration"));
    assert_eq!(durations.data_type(), &DataType::Utf8);
    assert_eq!(durations.as_string::<i32>().value(1), "PT1H");
    // Whole numbers only: still DOUBLE, so a later 7.5 fits.
    let mut p = policies(&double, None);
    for spec in p.columns.values_mut() {
        spec.type_from_catalog = true;
    }
    let (batch, _) = run_with(
        &fields,
        p,
        r#"{"data":{"items":[{"id":1,"duration":8},{"id":2,"duration":4}]}}"#,
    );
    let durations = batch
        .column_by_name("duration")
        .unwrap_or_else(|| panic!("duration"));
    assert_eq!(durations.data_type(), &DataType::Float64);
}

#[test]
fn pii_hash_is_a_stable_keyed_hmac_and_drop_removes_the_column() {
    let fields = vec![
        field("id", &[]),
        field("lastName", &[]),
        field("birthDate", &[]),
    ];
    let hash_and_drop = |key: &str| {
        policies(
            &[
                ("last_name", None, PiiPolicy::Hash),
                ("birth_date", None, PiiPolicy::Drop),
            ],
            Some(key),
        )
    };
    let (batch, _) = run_with(&fields, hash_and_drop("k1"), USERS);
    assert!(batch.column_by_name("birth_date").is_none(), "dropped");
    let names = batch
        .column_by_name("last_name")
        .unwrap_or_else(|| panic!("last_name"));
    let names = names.as_string::<i32>();
    // HMAC-SHA256("k1", "DOE"), as `printf DOE | openssl dgst -sha256 -hmac k1`.
    assert_eq!(
        names.value(0),
        "39ffb6c1965718a35cb418285e08a372583e553cf157ec22743ce13cbc0622f1"
    );
    assert!(names.is_null(2), "null stays null");
    let (again, _) = run_with(&fields, hash_and_drop("k1"), USERS);
    assert_eq!(
        again
            .column_by_name("last_name")
            .map(|a| a.as_string::<i32>().value(0).to_owned()),
        Some(names.value(0).to_owned()),
        "same key, same hash: joins across runs"
    );
    let (other, _) = run_with(&fields, hash_and_drop("k2"), USERS);
    assert_ne!(
        other
            .column_by_name("last_name")
            .map(|a| a.as_string::<i32>().value(0).to_owned()),
        Some(names.value(0).to_owned())
    );
}

#[test]
fn a_bad_value_fails_by_default_and_is_nulled_and_counted_on_request() {
    let fields = vec![field("id", &[]), field("startsOn", &[])];
    let json = r#"{"data":{"items":[{"id":1,"startsOn":"2020-02-01"},{"id":2,"startsOn":"soon"},{"id":3,"startsOn":"2021-01-01"}]}}"#;
    // Declared: an inferred type would widen to VARCHAR in the warm-up.
    let date = [("starts_on", Some(DeclaredType::Date), PiiPolicy::Keep)];
    let mut t = StreamTransform::new("users", &fields).with_policies(policies(&date, None));
    let err = t.push_page(&page(json)).err().map(|e| e.to_string());
    assert!(
        err.as_deref()
            .is_some_and(|e| e.contains("record id 2") && e.contains("\"soon\"")),
        "{err:?}"
    );
    let mut p = policies(&date, None);
    p.null_bad_values = true;
    let (batch, nulled) = run_with(&fields, p, json);
    assert_eq!(nulled, 1);
    let dates = batch
        .column_by_name("starts_on")
        .unwrap_or_else(|| panic!("starts_on"));
    assert_eq!(dates.data_type(), &DataType::Date32);
    assert_eq!(dates.null_count(), 1);
}

#[test]
fn a_scalar_where_other_records_have_an_object_gets_the_objects_own_column() {
    // `extendedData` values may be scalars or objects, in either order.
    let json = r#"{"data":{"items":[
      {"id":1,"extendedData":{"e_x":{"id":5,"name":"obj"}}},
      {"id":2,"extendedData":{"e_x":"A"}},
      {"id":3,"extendedData":{"e_x":{"id":6}}},
      {"id":4,"extendedData":{"e_x":null}}
    ]}}"#;
    let b = run(&[], json);
    let ints = |name: &str| -> Vec<Option<i64>> {
        b.column_by_name(name)
            .unwrap_or_else(|| panic!("{name}"))
            .as_primitive::<arrow::datatypes::Int64Type>()
            .iter()
            .collect()
    };
    let texts = |name: &str| -> Vec<Option<String>> {
        b.column_by_name(name)
            .unwrap_or_else(|| panic!("{name}"))
            .as_string::<i32>()
            .iter()
            .map(|v| v.map(str::to_owned))
            .collect()
    };
    assert_eq!(ints("extended_data_e_x_id"), [Some(5), None, Some(6), None]);
    assert_eq!(
        texts("extended_data_e_x_name"),
        [Some("obj".into()), None, None, None]
    );
    assert_eq!(
        texts("extended_data_e_x"),
        [None, Some("A".into()), None, None]
    );
}

#[test]
fn an_inferred_type_widens_for_a_later_value_of_the_first_batch() {
    let json = r#"{"data":{"items":[
      {"id":1,"amount":1,"day":"2020-01-01"},
      {"id":2,"amount":2.5,"day":"2020-01-02T10:30:00"},
      {"id":3,"amount":null,"day":null}
    ]}}"#;
    let b = run(&[], json);
    let amount = b
        .column_by_name("amount")
        .unwrap_or_else(|| panic!("amount"))
        .as_primitive::<arrow::datatypes::Float64Type>();
    assert_eq!(
        amount.iter().collect::<Vec<_>>(),
        [Some(1.0), Some(2.5), None]
    );
    let day = b
        .column_by_name("day")
        .unwrap_or_else(|| panic!("day"))
        .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
    assert_eq!(
        day.iter().collect::<Vec<_>>(),
        [
            Some(1_577_836_800_000_000),
            Some(1_577_961_000_000_000),
            None
        ]
    );

    // A declared type does not widen, and neither does a type an existing
    // append or merge table holds.
    let mut declared = StreamTransform::new("users", &[]).with_policies(policies(
        &[("amount", Some(DeclaredType::Bigint), PiiPolicy::Keep)],
        None,
    ));
    assert!(declared.push_page(&page(json)).is_err());
    let mut existing = ColumnPolicies::default();
    existing
        .existing
        .insert("users".into(), crate::load::TableColumns::new());
    let mut kept = StreamTransform::new("users", &[]).with_policies(existing);
    assert!(kept.push_page(&page(json)).is_err());
}

#[test]
fn a_number_that_does_not_fit_is_shown_as_written() {
    let json = r#"{"data":{"items":[{"id":1,"n":5},{"id":2,"n":18446744073709551615}]}}"#;
    // Declared: an inferred column would widen to VARCHAR.
    let mut t = StreamTransform::new("users", &[]).with_policies(policies(
        &[("n", Some(DeclaredType::Bigint), PiiPolicy::Keep)],
        None,
    ));
    match t.push_page(&page(json)) {
        Err(e) => assert!(
            e.to_string()
                .contains("value 18446744073709551615 does not fit column `n` of type Int64"),
            "{e}"
        ),
        Ok(_) => panic!("accepted a number past i64"),
    }
}

#[test]
fn an_append_or_merge_run_writes_each_column_in_the_type_its_table_has() {
    use arrow::datatypes::DataType;
    let table: crate::load::TableColumns = [
        ("id".to_owned(), Some(DataType::Int64)),
        ("a".to_owned(), Some(DataType::Int64)),
        ("b".to_owned(), Some(DataType::Float64)),
    ]
    .into_iter()
    .collect();
    let existing = |replaces_table| ColumnPolicies {
        existing: [("users".to_owned(), table.clone())].into_iter().collect(),
        replaces_table,
        ..ColumnPolicies::default()
    };
    // `b` is written as the DOUBLE it is, though `2` reads as an integer;
    // `a` is null throughout, yet keeps its type.
    let json = r#"{"data":{"items":[{"id":1,"a":null,"b":2}]}}"#;
    for replaces_table in [false, true] {
        let (batch, _) = run_with(&[], existing(replaces_table), json);
        let types: Vec<String> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| format!("{}:{}", f.name(), f.data_type()))
            .collect();
        let b = if replaces_table { "Int64" } else { "Float64" };
        assert_eq!(
            types,
            ["id:Int64", "a:Int64", &format!("b:{b}")],
            "{replaces_table}"
        );
    }
    // A value that does not fit the table's type fails, as any bad value.
    let mut t = StreamTransform::new("users", &[]).with_policies(existing(false));
    match t.push_page(&page(r#"{"data":{"items":[{"id":2,"a":"x"}]}}"#)) {
        Err(e) => assert!(
            e.to_string().contains(
                "record id 2: field `a`: value \"x\" does not fit column `a` of type Int64"
            ),
            "{e}"
        ),
        Ok(_) => panic!("a text value went into a BIGINT column"),
    }
}

#[test]
fn a_declared_field_the_table_has_flattened_is_no_new_column_when_absent() {
    // `extendedData` was an object in earlier runs; no record has it now.
    let table: crate::load::TableColumns = ["id", "extended_data_e_x"]
        .into_iter()
        .map(|c| (c.to_owned(), None))
        .collect();
    let policies = ColumnPolicies {
        existing: [("users".to_owned(), table)].into_iter().collect(),
        on_schema_change: OnSchemaChange::Fail,
        ..ColumnPolicies::default()
    };
    let fields = [field("id", &[]), field("extendedData", &[])];
    let (batch, _) = run_with(&fields, policies, r#"{"data":{"items":[{"id":6}]}}"#);
    let names: Vec<&str> = batch
        .schema_ref()
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(names, ["id"]);
}

#[test]
fn a_null_where_the_table_has_an_object_is_no_new_field() {
    // Earlier runs saw `manager` and `extendedData.e_badge` as objects; this
    // run's first record has them null (the head of the company has no
    // manager), the next as objects again.
    let table: crate::load::TableColumns = [
        "id",
        "manager_id",
        "manager_name",
        "extended_data_e_badge_code",
    ]
    .into_iter()
    .map(|c| (c.to_owned(), None))
    .collect();
    let policies = ColumnPolicies {
        existing: [("users".to_owned(), table)].into_iter().collect(),
        on_schema_change: OnSchemaChange::Fail,
        ..ColumnPolicies::default()
    };
    let json = r#"{"items":[
      {"id":1,"manager":null,"extendedData":{"e_badge":null}},
      {"id":2,"manager":{"id":1,"name":"A"},"extendedData":{"e_badge":{"code":"X"}}}
    ]}"#;
    let mut t = StreamTransform::new("users", &[]).with_policies(policies);
    let _ = t.push_page(&page(json)).unwrap_or_else(|e| panic!("{e}"));
    let batches = t.finish().unwrap_or_else(|e| panic!("{e}"));
    assert!(t.schema_changes().is_empty(), "{:?}", t.schema_changes());
    let users = batch_of(&batches, "users");
    let names: Vec<&str> = users
        .schema_ref()
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(
        names,
        [
            "id",
            "manager_id",
            "manager_name",
            "extended_data_e_badge_code"
        ]
    );
}

#[test]
fn a_child_table_column_takes_the_pii_policy_of_its_name() {
    let json = r#"{"data":{"items":[
      {"id":1,"mail":"a@x","birthDate":"1990-01-01","contacts":[{"mail":"b@x","birthDate":"1991-01-01","kind":"home"}]}
    ]}}"#;
    let mut policies = policies(
        &[
            ("mail", None, PiiPolicy::Hash),
            ("birth_date", None, PiiPolicy::Drop),
        ],
        Some("k1"),
    );
    policies.child_keys = vec!["id".into()];
    let mut t = StreamTransform::new("users", &[]).with_policies(policies);
    let _ = t.push_page(&page(json)).unwrap_or_else(|e| panic!("{e}"));
    let batches = t.finish().unwrap_or_else(|e| panic!("{e}"));
    let contacts = batch_of(&batches, "users__contacts");
    let mail = contacts
        .column_by_name("mail")
        .unwrap_or_else(|| panic!("mail"))
        .as_string::<i32>()
        .value(0)
        .to_owned();
    assert_eq!(mail.len(), 64, "hashed, not `b@x`: {mail}");
    assert!(contacts.column_by_name("birth_date").is_none(), "dropped");
    assert!(contacts.column_by_name("kind").is_some());
}

#[test]
fn a_child_tables_parent_key_is_named_and_hashed_as_the_parents_key_column() {
    let json = r#"{"data":{"items":[
      {"mail":"a@x","contacts":[{"kind":"home"},{"kind":"work"}]}
    ]}}"#;
    // The key `mail` is hashed: its child tables carry the same hash.
    let mut hashed = policies(&[("mail", None, PiiPolicy::Hash)], Some("k1"));
    hashed.child_keys = vec!["mail".into()];
    // The key `mail` is stored as `login` (`columns: {login: {path: mail}}`).
    let mut renamed = ColumnPolicies::default();
    renamed.renames.insert("mail".into(), "login".into());
    renamed.child_keys = vec!["mail".into()];
    for (policies, parent_column, child_column) in [
        (hashed, "mail", "users_mail"),
        (renamed, "login", "users_login"),
    ] {
        let mut t = StreamTransform::new("users", &[]).with_policies(policies);
        let _ = t.push_page(&page(json)).unwrap_or_else(|e| panic!("{e}"));
        let batches = t.finish().unwrap_or_else(|e| panic!("{e}"));
        let parent = texts_of(&batch_of(&batches, "users"), parent_column);
        let child = texts_of(&batch_of(&batches, "users__contacts"), child_column);
        assert_eq!(
            child,
            [parent[0].clone(), parent[0].clone()],
            "{child_column}"
        );
        if parent_column == "mail" {
            assert_eq!(child[0].as_deref().map(str::len), Some(64), "hashed");
        }
    }
}

/// The texts of a VARCHAR column./// The texts of a VARCHAR column.
fn texts_of(batch: &RecordBatch, name: &str) -> Vec<Option<String>> {
    let column = batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"));
    assert_eq!(column.data_type(), &DataType::Utf8, "{name}");
    column
        .as_string::<i32>()
        .iter()
        .map(|v| v.map(str::to_owned))
        .collect()
}

fn some(values: &[&str]) -> Vec<Option<String>> {
    values.iter().map(|v| Some((*v).to_owned())).collect()
}

#[test]
fn a_value_of_another_kind_in_the_warm_up_widens_the_column_to_varchar() {
    // Each column meets a value its inferred type cannot hold, then a
    // value of the first kind again: VARCHAR, the values buffered before
    // rewritten as text (a timestamp as Lucca writes it, a zoned one in
    // UTC).
    let json = r#"{"data":{"items":[
      {"id":1,"code":1,"at":"2015-09-07T10:20:06.583","tz":"2024-04-15T23:12:54.0001Z",
       "off":"2024-01-01T10:00:00+02:00","day":"2024-01-01","dz":"2024-01-01",
       "gone":"2024-01-01","flag":true,"rate":1.5,"dt":"2024-01-01"},
      {"id":2,"code":"A12","at":"2024-01-01T10:00:00+02:00","tz":"2024-01-01T10:00:00",
       "off":"2024-01-01T10:00:00","day":"unknown","dz":"2024-01-02T00:00:00Z",
       "gone":"","flag":1,"rate":"n/a","dt":"2024-01-02T10:30:00"},
      {"id":3,"code":7,"at":"2016-01-01T00:00:00","tz":"2024-01-01T00:00:00Z",
       "off":null,"day":"2024-02-29","dz":"2024-01-03","gone":"2024-01-03",
       "flag":false,"rate":2,"dt":"2024-01-03T00:00:00Z"}
    ]}}"#;
    let b = run(&[], json);
    assert_eq!(texts_of(&b, "code"), some(&["1", "A12", "7"]));
    assert_eq!(
        texts_of(&b, "at"),
        some(&[
            "2015-09-07T10:20:06.583",
            "2024-01-01T10:00:00+02:00",
            "2016-01-01T00:00:00"
        ])
    );
    assert_eq!(
        texts_of(&b, "tz"),
        some(&[
            "2024-04-15T23:12:54.0001Z",
            "2024-01-01T10:00:00",
            "2024-01-01T00:00:00Z"
        ])
    );
    assert_eq!(
        texts_of(&b, "off"),
        [
            Some("2024-01-01T08:00:00Z".to_owned()),
            Some("2024-01-01T10:00:00".to_owned()),
            None
        ]
    );
    assert_eq!(
        texts_of(&b, "day"),
        some(&["2024-01-01", "unknown", "2024-02-29"])
    );
    assert_eq!(
        texts_of(&b, "dz"),
        some(&["2024-01-01", "2024-01-02T00:00:00Z", "2024-01-03"])
    );
    assert_eq!(
        texts_of(&b, "gone"),
        some(&["2024-01-01", "", "2024-01-03"])
    );
    assert_eq!(texts_of(&b, "flag"), some(&["true", "1", "false"]));
    assert_eq!(texts_of(&b, "rate"), some(&["1.5", "n/a", "2"]));
    // DATE, then TIMESTAMP for a naive datetime, then VARCHAR for a zoned one.
    assert_eq!(
        texts_of(&b, "dt"),
        some(&[
            "2024-01-01T00:00:00",
            "2024-01-02T10:30:00",
            "2024-01-03T00:00:00Z"
        ])
    );
}

#[test]
fn after_the_warm_up_a_value_of_another_kind_fails_or_is_nulled() {
    let first = page(r#"{"data":{"items":[{"id":1,"code":1}]}}"#);
    let second = page(r#"{"data":{"items":[{"id":2,"code":"A12"}]}}"#);
    let mut t = StreamTransform::new("users", &[]).with_warmup_rows(1);
    let batch = batch_of(
        &t.push_page(&first).unwrap_or_else(|e| panic!("{e}")),
        "users",
    );
    assert_eq!(batch.schema().field(1).data_type(), &DataType::Int64);
    match t.push_page(&second) {
        Err(e) => assert!(
            e.to_string()
                .contains("value \"A12\" does not fit column `code` of type Int64"),
            "{e}"
        ),
        Ok(_) => panic!("widened a column after the first batch"),
    }
    let mut p = policies(&[], None);
    p.null_bad_values = true;
    let mut t = StreamTransform::new("users", &[])
        .with_policies(p)
        .with_warmup_rows(1);
    let _ = t.push_page(&first).unwrap_or_else(|e| panic!("{e}"));
    let batch = batch_of(
        &t.push_page(&second).unwrap_or_else(|e| panic!("{e}")),
        "users",
    );
    assert_eq!(batch.schema().field(1).data_type(), &DataType::Int64);
    assert_eq!(batch.column(1).null_count(), 1);
    assert_eq!(t.nulled_values(), 1);
}

#[test]
fn an_object_where_earlier_records_have_a_scalar_is_flattened_beside_it() {
    // The mirror of the test above: the scalars come first. Either order
    // gives the same columns, the scalars keeping their type.
    let ints = |b: &RecordBatch, name: &str| -> Vec<Option<i64>> {
        b.column_by_name(name)
            .unwrap_or_else(|| panic!("{name}"))
            .as_primitive::<arrow::datatypes::Int64Type>()
            .iter()
            .collect()
    };
    let scalar_first = run(
        &[],
        r#"{"data":{"items":[
      {"id":1,"extendedData":{"e_x":5,"e_y":"AB"}},
      {"id":2,"extendedData":{"e_x":{"id":7,"name":"Gold"},"e_y":{"id":8}}},
      {"id":3,"extendedData":{"e_x":6,"e_y":"CD"}}
    ]}}"#,
    );
    let object_first = run(
        &[],
        r#"{"data":{"items":[
      {"id":2,"extendedData":{"e_x":{"id":7,"name":"Gold"},"e_y":{"id":8}}},
      {"id":1,"extendedData":{"e_x":5,"e_y":"AB"}},
      {"id":3,"extendedData":{"e_x":6,"e_y":"CD"}}
    ]}}"#,
    );
    let names = |b: &RecordBatch| {
        let mut names: Vec<String> = b
            .schema()
            .fields()
            .iter()
            .map(|f| format!("{}: {}", f.name(), f.data_type()))
            .collect();
        names.sort();
        names
    };
    assert_eq!(
        names(&scalar_first),
        [
            "extended_data_e_x: Int64",
            "extended_data_e_x_id: Int64",
            "extended_data_e_x_name: Utf8",
            "extended_data_e_y: Utf8",
            "extended_data_e_y_id: Int64",
            "id: Int64",
        ]
    );
    assert_eq!(names(&scalar_first), names(&object_first));
    assert_eq!(
        ints(&scalar_first, "extended_data_e_x"),
        [Some(5), None, Some(6)]
    );
    assert_eq!(
        ints(&scalar_first, "extended_data_e_x_id"),
        [None, Some(7), None]
    );
    assert_eq!(
        texts_of(&scalar_first, "extended_data_e_x_name"),
        [None, Some("Gold".to_owned()), None]
    );
    // A text scalar first: the object is flattened, not stored as JSON text.
    assert_eq!(
        texts_of(&scalar_first, "extended_data_e_y"),
        [Some("AB".to_owned()), None, Some("CD".to_owned())]
    );
    assert_eq!(
        ints(&scalar_first, "extended_data_e_y_id"),
        [None, Some(8), None]
    );
}

#[test]
fn a_json_column_or_one_past_the_flatten_depth_keeps_an_object_after_a_scalar_as_text() {
    let json = r#"{"data":{"items":[
      {"id":1,"extendedData":{"e_x":5}},
      {"id":2,"extendedData":{"e_x":{"id":7}}}
    ]}}"#;
    let declared = policies(
        &[(
            "extended_data_e_x",
            Some(DeclaredType::Json),
            PiiPolicy::Keep,
        )],
        None,
    );
    let (b, _) = run_with(&[], declared, json);
    assert_eq!(
        texts_of(&b, "extended_data_e_x"),
        some(&["5", r#"{"id":7}"#])
    );
    assert!(b.column_by_name("extended_data_e_x_id").is_none());

    let mut shallow = policies(&[], None);
    shallow.flatten_depth = 1;
    let (b, _) = run_with(&[], shallow, json);
    assert_eq!(
        texts_of(&b, "extended_data_e_x"),
        some(&["5", r#"{"id":7}"#])
    );
    assert!(b.column_by_name("extended_data_e_x_id").is_none());
}

#[test]
fn an_integer_past_i64_is_kept_exactly_as_varchar_or_a_declared_decimal() {
    let json = r#"{"data":{"items":[
      {"id":1,"huge":123456789012345678901234567890,"n":1,"neg":-9223372036854775809,"amount":123456789012345678901234567890},
      {"id":2,"huge":5,"n":18446744073709551615,"neg":-1,"amount":7}
    ]}}"#;
    let declared = policies(
        &[(
            "amount",
            Some(DeclaredType::Decimal {
                precision: 38,
                scale: 0,
            }),
            PiiPolicy::Keep,
        )],
        None,
    );
    let (b, _) = run_with(&[], declared, json);
    assert_eq!(
        texts_of(&b, "huge"),
        some(&["123456789012345678901234567890", "5"])
    );
    assert_eq!(texts_of(&b, "n"), some(&["1", "18446744073709551615"]));
    assert_eq!(texts_of(&b, "neg"), some(&["-9223372036854775809", "-1"]));
    let amount = b
        .column_by_name("amount")
        .unwrap_or_else(|| panic!("amount"))
        .as_primitive::<arrow::datatypes::Decimal128Type>();
    assert_eq!(
        amount.iter().collect::<Vec<_>>(),
        [Some(123_456_789_012_345_678_901_234_567_890), Some(7)]
    );
}

#[test]
fn a_decimal_column_reads_json_numbers_from_their_text() {
    let declared = || {
        policies(
            &[(
                "amount",
                Some(DeclaredType::Decimal {
                    precision: 20,
                    scale: 2,
                }),
                PiiPolicy::Keep,
            )],
            None,
        )
    };
    let json = r#"{"data":{"items":[
      {"id":1,"amount":1234567890123456.78},{"id":2,"amount":2.675},{"id":3,"amount":-0.1},{"id":4,"amount":1.5E2}
    ]}}"#;
    let mut t = StreamTransform::new("users", &[]).with_policies(declared());
    // 2.675 has three decimals: not exact at scale 2, as the text "2.675"
    // (through a float it was rounded to 2.68, and 1.005 to 1.00).
    match t.push_page(&page(json)).and_then(|_| t.finish()) {
        Err(e) => assert!(e.to_string().contains("value 2.675 does not fit"), "{e}"),
        Ok(_) => panic!("2.675 went into decimal(20,2)"),
    }
    let json = json.replace("2.675", "2.67");
    let (b, _) = run_with(&[], declared(), &json);
    let amount = b
        .column_by_name("amount")
        .unwrap_or_else(|| panic!("amount"))
        .as_primitive::<arrow::datatypes::Decimal128Type>();
    assert_eq!(
        amount.iter().collect::<Vec<_>>(),
        [
            Some(123_456_789_012_345_678),
            Some(267),
            Some(-10),
            Some(15_000)
        ]
    );
}

#[test]
fn a_far_future_cursor_value_is_not_the_cursor() {
    let json = r#"{"data":{"items":[
      {"id":1,"modifiedAt":"2024-05-01T10:00:00.5"},
      {"id":2,"modifiedAt":"9999-12-31T00:00:00"},
      {"id":3,"modifiedAt":"2024-06-01T09:00:00"},
      {"id":4,"modifiedAt":null}
    ]}}"#;
    let fields = [field("id", &[]), field("modifiedAt", &[])];
    let mut t = StreamTransform::new("users", &fields).with_cursor_field("modifiedAt");
    let _ = t.push_page(&page(json)).unwrap_or_else(|e| panic!("{e}"));
    let batches = t.finish().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        batch_of(&batches, "users").num_rows(),
        4,
        "the record is kept"
    );
    assert_eq!(t.max_cursor(), Some("2024-06-01T09:00:00"));
}

#[test]
fn a_merged_record_without_a_key_value_fails_the_stream() {
    let merge = |key: &[&str]| ColumnPolicies {
        merge_key: key.iter().map(|k| (*k).to_owned()).collect(),
        ..ColumnPolicies::default()
    };
    // A composite key with one part null still tells records apart.
    let json = r#"{"data":{"items":[{"id":1,"site":null},{"id":null,"site":"b"}]}}"#;
    let (b, _) = run_with(&[], merge(&["id", "site"]), json);
    assert_eq!(b.num_rows(), 2);
    // A key null or absent in a record: every such record would be merged
    // into one row.
    for json in [
        r#"{"data":{"items":[{"id":1},{"id":null,"n":2}]}}"#,
        r#"{"data":{"items":[{"id":1},{"n":2}]}}"#,
    ] {
        let mut t = StreamTransform::new("users", &[]).with_policies(merge(&["id"]));
        match t.push_page(&page(json)).and_then(|_| t.finish()) {
            Err(e) => assert!(
                e.to_string().contains(
                    "record 2 of the page has no value for its primary key (id): a merge matches records on the key"
                ),
                "{e}"
            ),
            Ok(_) => panic!("a record without a key was merged: {json}"),
        }
    }
}

#[test]
fn a_null_under_one_spelling_leaves_the_value_under_the_other() {
    let json = r#"{"data":{"items":[
      {"id":1,"cultureID":null,"cultureId":1036},{"id":2,"cultureID":1033,"cultureId":null}
    ]}}"#;
    let b = run(&[], json);
    let culture = b
        .column_by_name("culture_id")
        .unwrap_or_else(|| panic!("culture_id"))
        .as_primitive::<arrow::datatypes::Int64Type>();
    assert_eq!(culture.iter().collect::<Vec<_>>(), [Some(1036), Some(1033)]);
}

/// A field dropped for privacy stays dropped when its value turns out to
/// be an object: none of its members becomes a column.
#[test]
fn a_dropped_field_whose_value_is_an_object_leaves_no_column() {
    let fields = vec![field("id", &[]), field("manager", &[])];
    let p = policies(&[("manager", None, PiiPolicy::Drop)], None);
    let (batch, _) = run_with(
        &fields,
        p,
        r#"{"data":{"items":[{"id":1,"manager":{"id":7,"name":"Roger Smith"}},{"id":2,"manager":null}]}}"#,
    );
    let names: Vec<String> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, vec!["id".to_owned()]);
}
