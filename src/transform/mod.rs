//! The transform stage: turns each page's raw JSON records into typed Arrow
//! record batches with flat, snake_case columns, reading every value once
//! straight from the page body (no JSON tree per record).

mod column;
pub mod temporal;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{Field, Schema, SchemaRef};

use crate::json::{self, Kind, Raw, same_key};
use crate::load::TableColumns;
pub use column::{ColumnBuilder, ColumnType, Scalar};
use hmac::{Hmac, Mac};

use crate::extract::Page;
use crate::pipeline::{
    ArrayPolicy, ColumnSpec, DeclaredType, FieldNode, Naming, OnBadValue, OnSchemaChange,
    PiiPolicy, Secret, StreamSpec, WriteMode,
};

/// Rows buffered per batch. The first batch waits for this many rows, so
/// columns still without a value by then become VARCHAR and one null-only
/// page never fixes a type; later batches are the same size, which keeps
/// the loaders' per-batch costs low.
pub const DEFAULT_WARMUP_ROWS: usize = 10_000;

/// Nested objects deeper than this are kept as JSON text.
pub const DEFAULT_MAX_DEPTH: usize = 3;

/// Column of a child table holding the item's position in its array.
pub const LIST_INDEX_COLUMN: &str = "list_index";

/// Why records could not become a batch.
#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    /// A record that cannot be read: not a JSON object, or a member that
    /// is not valid JSON. `index` is 0-based; the message counts from 1.
    #[error(
        "stream `{stream}`: page {page} ({url}): record {} of the page{}: {message}",
        .index + 1,
        .record_id.as_ref().map(|id| format!(" (id {id})")).unwrap_or_default()
    )]
    BadRecord {
        stream: String,
        page: u64,
        url: String,
        index: usize,
        record_id: Option<String>,
        message: String,
    },
    /// A record of a merged stream without a primary key value.
    #[error(
        "stream `{stream}`: page {page} ({url}): record {number} of the page has no value for its primary key ({key}): a merge matches records on the key, so every record needs one; choose a key every record has (e.g. id)"
    )]
    NoKey {
        stream: String,
        page: u64,
        url: String,
        /// 1-based position of the record in its page.
        number: usize,
        key: String,
    },
    /// A value that does not fit its column's type. Never silently nulled.
    #[error(
        "stream `{stream}`: record id {record_id}: field `{field}`: value {value} does not fit column `{column}` of type {column_type:?} (page {page}: {url})"
    )]
    BadValue {
        stream: String,
        record_id: String,
        field: String,
        value: String,
        column: String,
        column_type: ColumnType,
        page: u64,
        url: String,
    },
    /// A field the destination table does not have, with
    /// `on_schema_change: fail`.
    #[error(
        "stream `{stream}`: new field `{field}` (column `{column}`) is not in table `{table}` and on_schema_change is fail; set on_schema_change: add to add the column, or ignore to skip the field (page {page}: {url})"
    )]
    SchemaChanged {
        stream: String,
        table: String,
        field: String,
        column: String,
        page: u64,
        url: String,
    },
    /// Arrow refused the batch (a bug, reported rather than hidden).
    #[error("stream `{stream}`: cannot build a record batch: {source}")]
    Arrow {
        stream: String,
        source: arrow::error::ArrowError,
    },
}

/// One batch for one table: the stream's own, or a child table.
#[derive(Debug)]
pub struct TableBatch {
    /// `users`, or `users__user_work_cycles` for a child table.
    pub table: String,
    /// The rows.
    pub batch: RecordBatch,
}

/// A field the destination did not have (schema drift), as reported.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SchemaChange {
    /// The table it belongs to.
    pub table: String,
    /// Its column (or, for a new array of objects, its child table).
    pub column: String,
    /// The Lucca field's dotted path.
    pub field: String,
    /// `added` or `ignored`.
    pub action: &'static str,
}

/// A column as `lucca-sync schema` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ColumnInfo {
    /// Its table: the stream's, or a child table.
    pub table: String,
    /// Column name.
    pub column: String,
    /// The Lucca field it reads (dotted); empty for a child table's key
    /// and `list_index`.
    pub field: String,
    /// Its type, once declared or seen; `None` while no value says.
    #[serde(skip)]
    pub column_type: Option<ColumnType>,
    /// `hash` for a `pii: hash` column.
    pub pii: Option<&'static str>,
}

impl ColumnType {
    /// The type a declaration gives a column.
    pub fn declared(ty: DeclaredType) -> ColumnType {
        declared(ty)
    }
}

/// One output column.
#[derive(Debug)]
struct Column {
    /// Column name.
    name: String,
    /// Dotted source path, e.g. `manager.name`.
    path: String,
    builder: ColumnBuilder,
    /// Stamp of the last row that set this column.
    last_row: u64,
    /// A placeholder that turned out to be an object or an array of
    /// objects, a column whose policy is `pii: drop`, or an ignored new
    /// field: not built, not emitted.
    dead: bool,
    /// `pii: hash`: values are replaced by their keyed HMAC-SHA256.
    hashed: bool,
}

/// How a stream's records become columns: declared types and names, PII
/// policies, flattening, child tables, and what a bad value or a new field
/// does.
#[derive(Debug, Clone)]
pub struct ColumnPolicies {
    /// By column name.
    pub columns: HashMap<String, ColumnSpec>,
    /// Key of `pii: hash` columns.
    pub pii_key: Option<Secret>,
    /// Store NULL for a value that does not fit (`on_bad_value: null`).
    pub null_bad_values: bool,
    /// Column names given by `columns[].path`, by lower-cased dotted path.
    pub renames: HashMap<String, String>,
    /// How column names are spelled.
    pub naming: Naming,
    /// Objects nested deeper than this stay JSON text.
    pub flatten_depth: usize,
    /// What a field the destination table lacks does.
    pub on_schema_change: OnSchemaChange,
    /// The destination's tables of this stream (its own and its child
    /// tables) with their columns and types, read before the run. A table
    /// missing here is new: every field of it is expected. An `append` or
    /// `merge` run writes each column in the type the table has; a
    /// `replace` run gives the old type to a column it saw no value of.
    pub existing: HashMap<String, TableColumns>,
    /// Top-level fields of the primary key, carried by child tables. Empty:
    /// arrays of objects stay JSON text.
    pub child_keys: Vec<String>,
    /// The primary key columns of a `merge` stream: a record needs a value
    /// in one of them. Empty otherwise.
    pub merge_key: Vec<String>,
    /// Each run makes the table anew (`replace`), so its column types may
    /// be chosen afresh: a first run that reads no record creates it with
    /// the declared columns, and the first batch may widen a type. An
    /// `append` or `merge` table keeps the types of its first rows.
    pub replaces_table: bool,
}

impl Default for ColumnPolicies {
    fn default() -> Self {
        ColumnPolicies {
            columns: HashMap::new(),
            pii_key: None,
            null_bad_values: false,
            renames: HashMap::new(),
            naming: Naming::default(),
            flatten_depth: DEFAULT_MAX_DEPTH,
            on_schema_change: OnSchemaChange::default(),
            existing: HashMap::new(),
            child_keys: Vec::new(),
            merge_key: Vec::new(),
            replaces_table: false,
        }
    }
}

impl ColumnPolicies {
    /// The policies a stream's spec declares.
    pub fn of(stream: &StreamSpec, pii_key: Option<Secret>) -> Self {
        let keys: Vec<String> = stream
            .primary_key
            .as_ref()
            .map(|k| k.fields().into_iter().map(str::to_owned).collect())
            .unwrap_or_default();
        let merge_key = if stream.write_mode == WriteMode::Merge {
            keys.iter()
                .map(|k| crate::pipeline::naming::stream_column(stream, k))
                .collect()
        } else {
            Vec::new()
        };
        let child_keys =
            if stream.arrays == ArrayPolicy::Table && keys.iter().all(|k| !k.contains('.')) {
                keys
            } else {
                Vec::new()
            };
        ColumnPolicies {
            columns: stream
                .columns
                .iter()
                .map(|(name, spec)| (name.clone(), spec.clone()))
                .collect(),
            pii_key,
            null_bad_values: stream.on_bad_value == OnBadValue::Null,
            renames: stream
                .columns
                .iter()
                .filter_map(|(name, spec)| Some((spec.path.as_ref()?.to_lowercase(), name.clone())))
                .collect(),
            naming: stream.naming,
            flatten_depth: stream
                .flatten_depth
                .map_or(DEFAULT_MAX_DEPTH, |d| d as usize),
            on_schema_change: stream.on_schema_change,
            existing: HashMap::new(),
            merge_key,
            child_keys,
            replaces_table: stream.write_mode == WriteMode::Replace,
        }
    }

    /// The column of a top-level key field: the name `columns:` gives it,
    /// else the one `naming` makes.
    fn key_column(&self, field: &str) -> String {
        self.renames
            .get(&field.to_lowercase())
            .cloned()
            .unwrap_or_else(|| self.naming.segment(field))
    }

    /// True when a top-level key field's column is hashed (`pii: hash`).
    fn key_is_hashed(&self, field: &str) -> bool {
        self.columns
            .get(&self.key_column(field))
            .is_some_and(|spec| spec.pii == PiiPolicy::Hash)
    }

    /// The same policies, knowing the destination's existing tables.
    pub fn with_existing(mut self, existing: HashMap<String, TableColumns>) -> Self {
        self.existing = existing;
        self
    }

    /// The policies of a child table: the parent's naming, bad-value,
    /// drift and key rules; no declared columns; arrays stay JSON.
    fn for_child(&self) -> Self {
        ColumnPolicies {
            // A child table's columns take the stream's `pii` policies by
            // name (a `mail` hashed in the stream is hashed in its child
            // tables too), not its types or renames.
            columns: self
                .columns
                .iter()
                .filter(|(_, spec)| spec.pii != PiiPolicy::Keep)
                .map(|(name, spec)| {
                    let pii = ColumnSpec {
                        pii: spec.pii,
                        ..ColumnSpec::default()
                    };
                    (name.clone(), pii)
                })
                .collect(),
            renames: HashMap::new(),
            child_keys: Vec::new(),
            merge_key: Vec::new(),
            ..self.clone()
        }
    }
}

/// The column type of a declared type.
fn declared(ty: DeclaredType) -> ColumnType {
    match ty {
        DeclaredType::Bigint => ColumnType::Int64,
        DeclaredType::Double => ColumnType::Float64,
        DeclaredType::Decimal { precision, scale } => ColumnType::Decimal(precision, scale),
        DeclaredType::Boolean => ColumnType::Boolean,
        DeclaredType::String => ColumnType::Utf8,
        DeclaredType::Date => ColumnType::Date,
        DeclaredType::Timestamp => ColumnType::Timestamp,
        DeclaredType::Timestamptz => ColumnType::TimestampTz,
        DeclaredType::Json => ColumnType::Json,
    }
}

/// `value` replaced by the hex HMAC-SHA256 of its text under `key`.
fn hashed(key: &Hmac<sha2::Sha256>, value: &Scalar<'_>) -> Scalar<'static> {
    let text = match value {
        Scalar::Null => return Scalar::Null,
        Scalar::Bool(b) => b.to_string(),
        Scalar::Int(i) => i.to_string(),
        Scalar::BigInt(digits) => digits.to_string(),
        Scalar::Float(f) => f.to_string(),
        Scalar::Str(s) => s.to_string(),
        Scalar::Json(j) => j.to_string(),
    };
    let mut mac = key.clone();
    mac.update(text.as_bytes());
    let digest = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(64);
    for byte in digest {
        use std::fmt::Write;
        let _ = write!(hex, "{byte:02x}");
    }
    Scalar::Str(Cow::Owned(hex))
}

type NodeId = usize;

#[derive(Debug)]
enum Node {
    Leaf(usize),
    Object {
        /// Keys as spelled in the data, in the order first seen: records
        /// usually repeat that order, so the key at a record's position `i`
        /// is tried first.
        exact: Vec<(Box<str>, NodeId)>,
        /// Lower-cased keys: `cultureID` and `cultureId` are one column.
        folded: HashMap<Box<str>, NodeId>,
        path: String,
        name: String,
        depth: usize,
        /// Sub-fields declared in `fields` (`userWorkCycles[id,startsOn]`),
        /// for a child table if the value turns out to be an array.
        declared: Vec<FieldNode>,
    },
    /// An array of objects, written to `children[i]`.
    Array(usize),
}

/// True when `table` has no column `name` but columns flattened from it
/// (`name_...`): the field was an object.
fn was_flattened(table: &TableColumns, name: &str) -> bool {
    !table.contains_key(name)
        && table.keys().any(|column| {
            column
                .strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('_'))
        })
}

/// The node at `hint` if it has this key, else a scan.
fn find_key(exact: &[(Box<str>, NodeId)], key: &str, hint: usize) -> Option<NodeId> {
    if let Some((k, id)) = exact.get(hint)
        && same_key(k.as_bytes(), key.as_bytes())
    {
        return Some(*id);
    }
    exact
        .iter()
        .find(|(k, _)| same_key(k.as_bytes(), key.as_bytes()))
        .map(|(_, id)| *id)
}

/// A child table: the items of one array of objects.
#[derive(Debug)]
struct ChildTable {
    transform: StreamTransform,
}

/// Turns the pages of one stream into record batches: the stream's table
/// and its child tables.
#[derive(Debug)]
pub struct StreamTransform {
    stream: String,
    /// The table this transform fills: the stream's name, or
    /// `{stream}__{field}` for a child table.
    table: String,
    fields: Vec<FieldNode>,
    columns: Vec<Column>,
    nodes: Vec<Node>,
    children: Vec<ChildTable>,
    /// Leading columns that are not fields: a child table's parent key
    /// columns and `list_index`.
    key_columns: usize,
    row: u64,
    rows_pending: usize,
    warmup_rows: usize,
    schema: Option<SchemaRef>,
    /// Dotted path of the incremental cursor field, lower-cased.
    cursor_path: Option<String>,
    /// Its column, once created.
    cursor_column: Option<usize>,
    /// The highest cursor value read: (sortable value, text as sent).
    max_cursor: Option<(i64, String)>,
    /// Datetime cursor values past this (microseconds, two days from now)
    /// are not taken as the cursor: one far-future date would make every
    /// later run ask for changes after it, and read none.
    cursor_limit: i64,
    /// True once a future cursor value was reported.
    future_cursor_seen: bool,
    /// Declared types, PII policies, `on_bad_value`, naming, drift.
    policies: ColumnPolicies,
    /// The keyed MAC of `pii: hash` columns, ready to clone per value.
    mac: Option<Hmac<sha2::Sha256>>,
    /// Values stored as NULL because they did not fit (`on_bad_value: null`).
    nulled_values: u64,
    /// True while the declared `fields` are being laid out (not drift).
    declaring: bool,
    /// New fields met so far.
    changes: Vec<SchemaChange>,
    /// A new field under `on_schema_change: fail`: (path, column).
    drift_failure: Option<(String, String)>,
    /// By object node: the column of the scalars met where other records
    /// have that object.
    object_values: HashMap<NodeId, usize>,
}

/// The page being read, for error messages.
struct PageRef<'a> {
    number: u64,
    url: &'a str,
}

impl StreamTransform {
    /// A transform whose first columns are the declared `fields`, in order.
    pub fn new(stream: &str, fields: &[FieldNode]) -> Self {
        let mut t = StreamTransform {
            stream: stream.to_owned(),
            table: stream.to_owned(),
            fields: fields.to_vec(),
            columns: Vec::new(),
            nodes: Vec::new(),
            children: Vec::new(),
            key_columns: 0,
            row: 0,
            rows_pending: 0,
            warmup_rows: DEFAULT_WARMUP_ROWS,
            schema: None,
            cursor_path: None,
            cursor_column: None,
            max_cursor: None,
            cursor_limit: i64::MAX,
            future_cursor_seen: false,
            policies: ColumnPolicies::default(),
            mac: None,
            nulled_values: 0,
            declaring: false,
            changes: Vec::new(),
            drift_failure: None,
            object_values: HashMap::new(),
        };
        t.lay_out(String::new());
        t
    }

    /// (Re)builds the columns of the declared fields, under the current
    /// policies. `root_path` prefixes paths (a child table's array path).
    fn lay_out(&mut self, root_path: String) {
        self.columns.clear();
        self.object_values.clear();
        self.nodes = vec![Node::Object {
            exact: Vec::new(),
            folded: HashMap::new(),
            path: root_path,
            name: String::new(),
            depth: 0,
            declared: Vec::new(),
        }];
        self.declaring = true;
        let fields = std::mem::take(&mut self.fields);
        self.declare(0, &fields);
        self.fields = fields;
        self.declaring = false;
    }

    /// Applies declared types and names, PII policies, `on_bad_value`,
    /// naming, flattening depth, child tables and drift rules. Call before
    /// the first page.
    pub fn with_policies(mut self, policies: ColumnPolicies) -> Self {
        self.mac = policies
            .pii_key
            .as_ref()
            .and_then(|key| Hmac::<sha2::Sha256>::new_from_slice(key.expose().as_bytes()).ok());
        self.policies = policies;
        self.lay_out(String::new());
        self
    }

    /// Values stored as NULL because they did not fit their column, child
    /// tables included.
    pub fn nulled_values(&self) -> u64 {
        self.nulled_values
            + self
                .children
                .iter()
                .map(|c| c.transform.nulled_values())
                .sum::<u64>()
    }

    /// Fields the destination did not have, child tables included.
    pub fn schema_changes(&self) -> Vec<SchemaChange> {
        let mut all = self.changes.clone();
        for child in &self.children {
            all.extend(child.transform.schema_changes());
        }
        all
    }

    /// The columns laid out so far (declared, then seen), child tables
    /// included; dropped and ignored columns are left out.
    pub fn describe(&self) -> Vec<ColumnInfo> {
        let mut all: Vec<ColumnInfo> = self
            .columns
            .iter()
            .filter(|c| !c.dead)
            .map(|c| ColumnInfo {
                table: self.table.clone(),
                column: c.name.clone(),
                field: c.path.clone(),
                column_type: c.builder.column_type(),
                pii: c.hashed.then_some("hash"),
            })
            .collect();
        for child in &self.children {
            all.extend(child.transform.describe());
        }
        all
    }

    /// The tables this stream wrote: its own, then its child tables.
    pub fn tables(&self) -> Vec<String> {
        let mut all = vec![self.table.clone()];
        for child in &self.children {
            all.extend(child.transform.tables());
        }
        all
    }

    fn apply_policy(&mut self, column: usize) {
        // An append or merge table keeps its columns' types.
        let kept = if self.policies.replaces_table {
            None
        } else {
            self.existing_type(&self.columns[column].name)
        };
        let col = &mut self.columns[column];
        let spec = self.policies.columns.get(&col.name);
        match spec.map(|s| s.pii) {
            Some(PiiPolicy::Drop) => col.dead = true,
            Some(PiiPolicy::Hash) => {
                col.hashed = true;
                col.builder.settle(ColumnType::Utf8);
            }
            Some(PiiPolicy::Keep) | None => {
                if let Some(ty) = spec.and_then(|s| s.data_type) {
                    col.builder.settle(declared(ty));
                } else if let Some(ty) = kept {
                    col.builder.settle(ty);
                }
            }
        }
    }

    /// The type column `name` has in this table at the destination, if
    /// the table exists and has it in a type lucca-sync writes.
    fn existing_type(&self, name: &str) -> Option<ColumnType> {
        let data_type = self
            .policies
            .existing
            .get(&self.table)?
            .get(name)?
            .as_ref()?;
        ColumnType::of_arrow(data_type)
    }

    /// Tracks the highest value of `path` (e.g. `modifiedAt`), the cursor
    /// of incremental extraction. Call before the first page.
    pub fn with_cursor_field(mut self, path: &str) -> Self {
        let lower = path.to_lowercase();
        self.cursor_column = self
            .columns
            .iter()
            .position(|c| c.path.to_lowercase() == lower);
        self.cursor_path = Some(lower);
        self.cursor_limit = (chrono::Utc::now() + chrono::Duration::days(2))
            .naive_utc()
            .and_utc()
            .timestamp_micros();
        self
    }

    /// The highest cursor value read so far, as the API wrote it.
    pub fn max_cursor(&self) -> Option<&str> {
        self.max_cursor.as_ref().map(|(_, text)| text.as_str())
    }

    /// Sets how many records are buffered per batch.
    pub fn with_warmup_rows(mut self, rows: usize) -> Self {
        self.warmup_rows = rows.max(1);
        self
    }

    fn declare(&mut self, parent: NodeId, fields: &[FieldNode]) {
        for field in fields {
            let object = !field.children.is_empty();
            let position = match &self.nodes[parent] {
                Node::Object { exact, .. } => exact.len(),
                _ => 0,
            };
            if let Some(id) = self.child(parent, &field.name, object, position)
                && object
            {
                if let Node::Object { declared, .. } = &mut self.nodes[id] {
                    declared.clone_from(&field.children);
                }
                self.declare(id, &field.children);
            }
        }
    }

    /// Finds or creates the child `key` of an object node; `position` is
    /// the key's index in its record (the lookup's first guess). `None`
    /// when the object is past the flattening depth (the caller keeps JSON
    /// text).
    fn child(
        &mut self,
        parent: NodeId,
        key: &str,
        object: bool,
        position: usize,
    ) -> Option<NodeId> {
        let Node::Object {
            exact,
            folded,
            path,
            name,
            depth,
            ..
        } = &mut self.nodes[parent]
        else {
            return None;
        };
        if let Some(id) = find_key(exact, key, position) {
            return Some(id);
        }
        let lower = key.to_lowercase();
        if let Some(id) = folded.get(lower.as_str()).copied() {
            exact.push((key.into(), id));
            return Some(id);
        }
        let child_path = if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        };
        let segment = self.policies.naming.segment(key);
        let base_name = if name.is_empty() {
            segment
        } else {
            format!("{name}_{segment}")
        };
        let child_depth = *depth + 1;
        let id = self.node_count();
        if let Node::Object { exact, folded, .. } = &mut self.nodes[parent] {
            exact.push((key.into(), id));
            folded.insert(lower.into(), id);
        }
        if object && child_depth <= self.policies.flatten_depth {
            let name = self.unique_name(&base_name);
            self.nodes.push(Node::Object {
                exact: Vec::new(),
                folded: HashMap::new(),
                path: child_path,
                name,
                depth: child_depth,
                declared: Vec::new(),
            });
        } else {
            let name = match self.policies.renames.get(&child_path.to_lowercase()) {
                Some(renamed) => renamed.clone(),
                None => self.unique_name(&base_name),
            };
            let is_cursor = self
                .cursor_path
                .as_deref()
                .is_some_and(|c| c == child_path.to_lowercase());
            let column = self.add_column(name, child_path, object.then_some(ColumnType::Json));
            if is_cursor {
                self.cursor_column = Some(column);
            }
            self.apply_policy(column);
            self.nodes.push(Node::Leaf(column));
        }
        Some(id)
    }

    fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Decides what a new column does under `on_schema_change`; true when
    /// it is not stored.
    fn drift(&mut self, column: &str, path: &str) -> bool {
        if self.declaring || self.policies.columns.contains_key(column) {
            return false;
        }
        let Some(known) = self.policies.existing.get(&self.table) else {
            // The table's first run: every field is expected.
            return false;
        };
        let child_table = format!("{}__{column}", self.table);
        // A null (or scalar) where the table has the field as an object
        // (flattened columns) or as a child table is no new field.
        if known.contains_key(column)
            || was_flattened(known, column)
            || self.policies.existing.contains_key(&child_table)
        {
            return false;
        }
        let action = match self.policies.on_schema_change {
            OnSchemaChange::Add => "added",
            OnSchemaChange::Ignore => "ignored",
            OnSchemaChange::Fail => {
                if self.drift_failure.is_none() {
                    self.drift_failure = Some((path.to_owned(), column.to_owned()));
                }
                return true;
            }
        };
        tracing::warn!(stream = %self.stream, table = %self.table, column, field = path, action, "new field `{path}` {action} (on_schema_change)");
        self.changes.push(SchemaChange {
            table: self.table.clone(),
            column: column.to_owned(),
            field: path.to_owned(),
            action,
        });
        action == "ignored"
    }

    /// `manager_id` from `manager[id]` collides with a top-level `managerId`:
    /// the later one gets a numbered suffix, and a warning says so.
    fn unique_name(&self, base: &str) -> String {
        let taken = |n: &str| {
            self.columns.iter().any(|c| c.name == n)
                || self
                    .nodes
                    .iter()
                    .any(|node| matches!(node, Node::Object { name, .. } if name == n))
        };
        if !taken(base) {
            return base.to_owned();
        }
        let mut i = 2;
        loop {
            let candidate = format!("{base}_{i}");
            if !taken(&candidate) {
                tracing::warn!(stream = %self.stream, column = %candidate, "two fields map to the column name `{base}`; the later one is named `{candidate}`");
                return candidate;
            }
            i += 1;
        }
    }

    /// Reads a page. Returns batches once enough rows are buffered.
    pub fn push_page(&mut self, page: &Page) -> Result<Vec<TableBatch>, TransformError> {
        let at = PageRef {
            number: page.number,
            url: &page.url,
        };
        let mut pairs = Vec::with_capacity(16);
        for index in 0..page.len() {
            let record_id = || {
                page.records
                    .member(&page.body, index, "id")
                    .map(|raw| raw.text.trim_matches('"').to_owned())
            };
            let is_object = page
                .records
                .members(&page.body, index, &mut pairs)
                .map_err(|e| self.bad_record(index, record_id(), &at, e.to_string()))?;
            if !is_object {
                // Not an object: the reader says what it is instead.
                pairs =
                    json::object_members(page.records.text(&page.body, index)).map_err(|e| {
                        self.bad_record(index, None, &at, format!("not a JSON object: {e}"))
                    })?;
            }
            self.push_record(&pairs, index, &at)?;
        }
        if self.rows_pending >= self.warmup_rows {
            return self.emit();
        }
        Ok(Vec::new())
    }

    /// Emits whatever is still buffered. A `replace` stream that read no
    /// record gets an empty batch of its declared columns (typed as the
    /// table had them), so that the run leaves an empty table (`count(*)`
    /// = 0, one empty Parquet file), not none.
    pub fn finish(&mut self) -> Result<Vec<TableBatch>, TransformError> {
        let mut out = self.emit()?;
        if out.is_empty() && self.schema.is_none() && self.policies.replaces_table {
            // A declared field the table had as a child table stays one,
            // not flattened columns of this table.
            let children: Vec<NodeId> = (1..self.nodes.len())
                .filter(|&id| match &self.nodes[id] {
                    Node::Object { name, .. } => self
                        .policies
                        .existing
                        .contains_key(&format!("{}__{name}", self.table)),
                    _ => false,
                })
                .collect();
            for id in children {
                self.make_child_table(id);
            }
        }
        if out.is_empty()
            && self.schema.is_none()
            && self.policies.replaces_table
            && let Some(batch) = self.emit_own(true)?
        {
            out.push(TableBatch {
                table: self.table.clone(),
                batch,
            });
        }
        Ok(out)
    }

    fn push_record<'a>(
        &mut self,
        pairs: &[(Cow<'a, str>, Raw<'a>)],
        index: usize,
        at: &PageRef,
    ) -> Result<(), TransformError> {
        let mut ctx = RecordCtx {
            pairs,
            index,
            at,
            arrays: Vec::new(),
        };
        self.row += 1;
        self.fill_object(0, pairs, &mut ctx)?;
        if !self.policies.merge_key.is_empty() && !self.has_key_value() {
            return Err(TransformError::NoKey {
                stream: self.stream.clone(),
                page: at.number,
                url: at.url.to_owned(),
                number: index + 1,
                key: self.policies.merge_key.join(", "),
            });
        }
        self.end_row();
        if !ctx.arrays.is_empty() {
            let keys: Vec<Scalar> = self
                .policies
                .child_keys
                .iter()
                .map(|k| {
                    let value = pairs
                        .iter()
                        .find(|(name, _)| name.eq_ignore_ascii_case(k))
                        .and_then(|(_, raw)| scalar(*raw).ok())
                        .unwrap_or(Scalar::Null);
                    // A hashed key is hashed in the child tables too: the
                    // same value, so that they join.
                    match &self.mac {
                        Some(mac) if self.policies.key_is_hashed(k) => hashed(mac, &value),
                        _ => value,
                    }
                })
                .collect();
            let arrays = std::mem::take(&mut ctx.arrays);
            for (child, text) in arrays {
                self.children[child]
                    .transform
                    .push_items(&keys, text, &ctx)?;
            }
        }
        Ok(())
    }

    /// Appends the items of one array as rows of this child table.
    fn push_items(
        &mut self,
        keys: &[Scalar<'_>],
        array: &str,
        parent: &RecordCtx,
    ) -> Result<(), TransformError> {
        let items = json::array_items(array)
            .map_err(|e| self.bad_member(parent, format!("array `{}`: {e}", self.root_path())))?;
        let mut ctx = RecordCtx {
            pairs: parent.pairs,
            index: parent.index,
            at: parent.at,
            arrays: Vec::new(),
        };
        for (position, item) in items.into_iter().enumerate() {
            if item.kind == Kind::Null {
                continue;
            }
            let pairs = if item.kind == Kind::Object {
                json::object_members(item.text).map_err(|e| {
                    self.bad_member(parent, format!("array `{}`: {e}", self.root_path()))
                })?
            } else {
                // A scalar among objects: stored in a `value` column.
                vec![(Cow::Borrowed("value"), item)]
            };
            self.row += 1;
            let row = self.row;
            let index = Scalar::Int(i64::try_from(position).unwrap_or(i64::MAX));
            for (column, value) in keys.iter().chain(std::iter::once(&index)).enumerate() {
                let col = &mut self.columns[column];
                if !col.builder.append(value) {
                    col.builder.settle(ColumnType::Utf8);
                    col.builder.append_null();
                }
                col.last_row = row;
            }
            self.fill_object(0, &pairs, &mut ctx)?;
            self.end_row();
        }
        Ok(())
    }

    /// Nulls for the columns the current record did not set.
    fn end_row(&mut self) {
        let row = self.row;
        for column in self.columns.iter_mut().filter(|c| !c.dead) {
            if column.last_row != row {
                column.builder.append_null();
                column.last_row = row;
            }
        }
        self.rows_pending += 1;
    }

    /// True when some primary key column got a value in this row (nulls
    /// are left to `end_row`).
    fn has_key_value(&self) -> bool {
        let row = self.row;
        self.policies.merge_key.iter().any(|name| {
            self.columns
                .iter()
                .any(|c| c.last_row == row && !c.dead && c.name == *name)
        })
    }

    fn root_path(&self) -> &str {
        match self.nodes.first() {
            Some(Node::Object { path, .. }) => path,
            _ => "",
        }
    }

    /// Turns node `node` (a field seen as an array of objects) into a child
    /// table. Returns the child's index, or `None` when the stream keeps
    /// arrays as JSON, the batch schema is already fixed, or the new table
    /// is an ignored field.
    fn make_child_table(&mut self, node: NodeId) -> Option<usize> {
        if self.policies.child_keys.is_empty() {
            return None;
        }
        let (path, name, declared) = match &self.nodes[node] {
            Node::Object {
                path,
                name,
                declared,
                ..
            } => (path.clone(), name.clone(), declared.clone()),
            Node::Leaf(column) => {
                let c = &self.columns[*column];
                if c.dead {
                    return None;
                }
                (c.path.clone(), c.name.clone(), Vec::new())
            }
            Node::Array(child) => return Some(*child),
        };
        self.retire_columns_under(&path);
        let table = format!("{}__{name}", self.table);
        let mut child = StreamTransform::new(&self.stream, &[]);
        child.table = table;
        child.fields = declared;
        child.policies = self.policies.for_child();
        child.mac = self.mac.clone();
        child.warmup_rows = self.warmup_rows;
        child.lay_out(path);
        // Parent key columns (named after the parent's key columns) and
        // `list_index` come first.
        let mut leading = Vec::new();
        for key in &self.policies.child_keys {
            leading.push(format!("{}_{}", self.table, self.policies.key_column(key)));
        }
        leading.push(LIST_INDEX_COLUMN.to_owned());
        let declared_columns = std::mem::take(&mut child.columns);
        for name in leading {
            child.columns.push(Column {
                name,
                path: String::new(),
                builder: ColumnBuilder::Pending(0),
                last_row: 0,
                dead: false,
                hashed: false,
            });
        }
        child.key_columns = child.columns.len();
        let shift = child.key_columns;
        child.columns.extend(declared_columns);
        for n in &mut child.nodes {
            if let Node::Leaf(c) = n {
                *c += shift;
            }
        }
        let index = self.children.len();
        self.children.push(ChildTable { transform: child });
        self.nodes[node] = Node::Array(index);
        Some(index)
    }

    /// Columns laid out under `path` stop being built, unless a batch has
    /// fixed the schema already (they then stay, null).
    fn retire_columns_under(&mut self, path: &str) {
        if self.schema.is_some() {
            return;
        }
        let prefix = format!("{path}.");
        for column in &mut self.columns {
            if column.path == path || column.path.starts_with(&prefix) {
                column.dead = true;
            }
        }
    }

    /// The column of the scalars met at an object node, named after the
    /// object (`extended_data_e_x` beside `extended_data_e_x_id`): the
    /// flattened columns keep the records that had an object.
    fn object_value_column(&mut self, node: NodeId) -> usize {
        if let Some(column) = self.object_values.get(&node) {
            return *column;
        }
        let (path, name) = match &self.nodes[node] {
            Node::Object { path, name, .. } => (path.clone(), name.clone()),
            _ => (String::new(), String::new()),
        };
        let name = if self.columns.iter().any(|c| c.name == name) {
            self.unique_name(&name)
        } else {
            name
        };
        let column = self.add_column(name, path, None);
        self.apply_policy(column);
        self.object_values.insert(node, column);
        column
    }

    /// A column met after the stream's first rows: null in the rows
    /// buffered so far, of type `ty` or inferred, subject to
    /// `on_schema_change`.
    fn add_column(&mut self, name: String, path: String, ty: Option<ColumnType>) -> usize {
        let column = self.columns.len();
        let mut builder = ColumnBuilder::Pending(0);
        for _ in 0..self.rows_pending {
            builder.append_null();
        }
        if let Some(ty) = ty {
            builder.settle(ty);
        }
        let drift = self.drift(&name, &path);
        self.columns.push(Column {
            name,
            path,
            builder,
            // Not set in the current record yet.
            last_row: self.row.wrapping_sub(1),
            dead: drift,
            hashed: false,
        });
        column
    }

    /// Turns an object node whose value is an array (kept as JSON) into
    /// one JSON column.
    fn object_to_json_column(&mut self, node: NodeId) -> usize {
        let (path, name) = match &self.nodes[node] {
            Node::Object { path, name, .. } => (path.clone(), name.clone()),
            Node::Leaf(column) => return *column,
            Node::Array(_) => (String::new(), String::new()),
        };
        self.retire_columns_under(&path);
        let column = self.add_column(name, path, Some(ColumnType::Json));
        self.nodes[node] = Node::Leaf(column);
        column
    }

    fn fill_object<'a>(
        &mut self,
        node: NodeId,
        pairs: &[(Cow<'a, str>, Raw<'a>)],
        ctx: &mut RecordCtx<'_, 'a>,
    ) -> Result<(), TransformError> {
        for (position, (key, raw)) in pairs.iter().enumerate() {
            let raw = *raw;
            let text: &'a str = raw.text;
            let is_object = raw.kind == Kind::Object;
            let Some(child) = self.child(node, key, is_object, position) else {
                continue;
            };
            if let Some((path, column)) = self.drift_failure.take() {
                return Err(TransformError::SchemaChanged {
                    stream: self.stream.clone(),
                    table: self.table.clone(),
                    field: path,
                    column,
                    page: ctx.at.number,
                    url: ctx.at.url.to_owned(),
                });
            }
            let is_array_of_objects = || {
                raw.kind == Kind::Array
                    && json::array_items(text)
                        .ok()
                        .and_then(|items| {
                            items
                                .into_iter()
                                .find(|v| v.kind != Kind::Null)
                                .map(|v| v.kind == Kind::Object)
                        })
                        .unwrap_or(false)
            };
            match &self.nodes[child] {
                Node::Array(index) => {
                    let index = *index;
                    if text.starts_with('[') {
                        ctx.arrays.push((index, text));
                    } else if text != "null" {
                        let path = self.children[index].transform.root_path().to_owned();
                        return Err(self.bad_value(ctx, &path, &path, ColumnType::Json, text));
                    }
                }
                Node::Object { .. } => {
                    if is_object {
                        let inner = json::object_members(text)
                            .map_err(|e| self.bad_member(ctx, format!("field `{key}`: {e}")))?;
                        self.fill_object(child, &inner, ctx)?;
                    } else if text.starts_with('[') {
                        if let Some(index) = self.make_child_table(child) {
                            ctx.arrays.push((index, text));
                        } else {
                            let column = self.object_to_json_column(child);
                            self.set_value(column, key, raw, ctx)?;
                        }
                    } else if text != "null" {
                        // A scalar where other records have an object
                        // (`extendedData` values may be either).
                        let column = self.object_value_column(child);
                        self.set_value(column, key, raw, ctx)?;
                    }
                }
                Node::Leaf(column) => {
                    let column = *column;
                    let pending = matches!(self.columns[column].builder, ColumnBuilder::Pending(_));
                    if is_object
                        && !self.columns[column].dead
                        && (pending || self.may_become_object(node, column))
                    {
                        if pending {
                            // Declared as a plain field, but it is an
                            // object: flatten it instead (not a field
                            // dropped for privacy, checked above: its
                            // members would escape the drop).
                            self.columns[column].dead = true;
                        } else {
                            // Scalars so far, an object now (`extendedData`
                            // values may be either): its scalars still go to
                            // this column, as when the object comes first.
                            self.object_values.insert(child, column);
                        }
                        let (path, name) = self.leaf_naming(column);
                        let depth = self.node_depth(node) + 1;
                        self.nodes[child] = Node::Object {
                            exact: Vec::new(),
                            folded: HashMap::new(),
                            path,
                            name,
                            depth,
                            declared: Vec::new(),
                        };
                        let inner = json::object_members(text)
                            .map_err(|e| self.bad_member(ctx, format!("field `{key}`: {e}")))?;
                        self.fill_object(child, &inner, ctx)?;
                        continue;
                    }
                    if pending && text.starts_with('[') {
                        if is_array_of_objects() {
                            if let Some(index) = self.make_child_table(child) {
                                ctx.arrays.push((index, text));
                                continue;
                            }
                        } else if text == "[]" && !self.policies.child_keys.is_empty() {
                            // Empty so far: it may be an array of objects.
                            continue;
                        }
                    }
                    self.set_value(column, key, raw, ctx)?;
                }
            }
        }
        Ok(())
    }

    /// Stores one scalar (or JSON text) into its column.
    fn set_value(
        &mut self,
        column: usize,
        key: &str,
        raw: Raw<'_>,
        ctx: &RecordCtx,
    ) -> Result<(), TransformError> {
        let value = scalar(raw).map_err(|e| self.bad_member(ctx, format!("field `{key}`: {e}")))?;
        let row = self.row;
        let col = &mut self.columns[column];
        if col.last_row == row || col.dead || matches!(value, Scalar::Null) {
            // The same field twice (e.g. `cultureID` and `cultureId` on one
            // record): the first non-null wins (a null is left to
            // `end_row`, so that a value after it under the other spelling
            // still counts). A dropped column keeps nothing.
            return Ok(());
        }
        let value = match (&self.mac, col.hashed) {
            (Some(mac), true) => hashed(mac, &value),
            // Validation requires a key; without one nothing personal is
            // ever stored in clear.
            (None, true) => Scalar::Null,
            // A number into a DECIMAL column is read from its text, digit
            // by digit (through a float, 1234567890123456.78 became
            // ...456.80 and 1.005 rounded to 1.00); an exponent form goes
            // through the float.
            (_, false)
                if matches!(value, Scalar::Float(_))
                    && matches!(col.builder, ColumnBuilder::Decimal(..))
                    && !raw.text.contains(['e', 'E']) =>
            {
                Scalar::BigInt(raw.text)
            }
            (_, false) => value,
        };
        // Before the first batch fixes the schema, an inferred type may
        // widen (BIGINT to DOUBLE, DATE to TIMESTAMP, any other mix to
        // VARCHAR) unless a table of this stream already holds it. Asked
        // only of a value that does not fit. The catalog's types are
        // likely types, not the user's word: they may widen too.
        let may_widen = |name: &str| {
            self.schema.is_none()
                && (self.policies.replaces_table
                    || !self.policies.existing.contains_key(&self.table))
                && self
                    .policies
                    .columns
                    .get(name)
                    .is_none_or(|spec| spec.data_type.is_none() || spec.type_from_catalog)
        };
        let fits = col.builder.append(&value)
            || (may_widen(&col.name) && col.builder.widen(&value) && col.builder.append(&value));
        if !fits {
            if self.policies.null_bad_values {
                col.builder.append_null();
                self.nulled_values += 1;
            } else {
                let (path, name, ty) = (
                    col.path.clone(),
                    col.name.clone(),
                    col.builder.column_type().unwrap_or(ColumnType::Utf8),
                );
                // A number is shown as written (a long fraction read as
                // a float would be shown rounded).
                let shown = match value {
                    Scalar::Float(_) if !col.hashed => raw.text.to_owned(),
                    _ => value.shown(),
                };
                return Err(self.bad_value(ctx, &path, &name, ty, &shown));
            }
        }
        self.columns[column].last_row = row;
        if self.cursor_column == Some(column) {
            self.track_cursor(&value);
        }
        Ok(())
    }

    fn track_cursor(&mut self, value: &Scalar<'_>) {
        let (rank, text) = match value {
            Scalar::Str(s) => match temporal::parse(s) {
                Some(temporal::Temporal::Naive(us) | temporal::Temporal::Zoned(us)) => {
                    (us, s.to_string())
                }
                Some(temporal::Temporal::Date(d)) => (i64::from(d) * 86_400_000_000, s.to_string()),
                None => return,
            },
            Scalar::Int(i) => (*i, i.to_string()),
            _ => return,
        };
        if matches!(value, Scalar::Str(_)) && rank > self.cursor_limit {
            if !self.future_cursor_seen {
                self.future_cursor_seen = true;
                tracing::warn!(
                    stream = %self.stream,
                    field = self.cursor_path.as_deref().unwrap_or_default(),
                    value = %text,
                    "a record's incremental cursor is in the future ({text}): not stored as the cursor (the next runs would ask for changes after it and read none)"
                );
            }
            return;
        }
        if self
            .max_cursor
            .as_ref()
            .is_none_or(|(best, _)| rank > *best)
        {
            self.max_cursor = Some((rank, text));
        }
    }

    /// True when the scalar column `column`, a field of object node
    /// `parent`, is to be flattened for an object value: its type is
    /// inferred (or one its table has), not declared (`json` or other),
    /// not JSON (past the flattening depth), and the column is neither
    /// dropped nor hashed (flattened members would escape the policy).
    fn may_become_object(&self, parent: NodeId, column: usize) -> bool {
        let col = &self.columns[column];
        !col.dead
            && !col.hashed
            && col.builder.column_type() != Some(ColumnType::Json)
            && self.node_depth(parent) < self.policies.flatten_depth
            && self
                .policies
                .columns
                .get(&col.name)
                .is_none_or(|spec| spec.data_type.is_none())
    }

    fn leaf_naming(&self, column: usize) -> (String, String) {
        let c = &self.columns[column];
        (c.path.clone(), c.name.clone())
    }

    fn node_depth(&self, node: NodeId) -> usize {
        match &self.nodes[node] {
            Node::Object { depth, .. } => *depth,
            Node::Leaf(_) | Node::Array(_) => 0,
        }
    }

    fn bad_record(
        &self,
        index: usize,
        record_id: Option<String>,
        at: &PageRef,
        message: String,
    ) -> TransformError {
        TransformError::BadRecord {
            stream: self.stream.clone(),
            page: at.number,
            url: at.url.to_owned(),
            index,
            record_id,
            message,
        }
    }

    /// A member of the record in `ctx` that cannot be read (`message`
    /// names it), naming the record by its `id`.
    fn bad_member(&self, ctx: &RecordCtx, message: String) -> TransformError {
        let record_id = ctx
            .pairs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("id"))
            .map(|(_, v)| v.text.trim_matches('"').to_owned());
        self.bad_record(ctx.index, record_id, ctx.at, message)
    }

    fn bad_value(
        &self,
        ctx: &RecordCtx,
        field: &str,
        column: &str,
        column_type: ColumnType,
        value: &str,
    ) -> TransformError {
        let record_id = ctx
            .pairs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("id"))
            .map(|(_, v)| v.text.trim_matches('"').to_owned())
            .unwrap_or_else(|| format!("? (record {} of the page)", ctx.index + 1));
        TransformError::BadValue {
            stream: self.stream.clone(),
            record_id,
            field: field.to_owned(),
            value: value.to_owned(),
            column: column.to_owned(),
            column_type,
            page: ctx.at.number,
            url: ctx.at.url.to_owned(),
        }
    }

    fn emit(&mut self) -> Result<Vec<TableBatch>, TransformError> {
        let mut out = Vec::new();
        if let Some(batch) = self.emit_own(false)? {
            out.push(TableBatch {
                table: self.table.clone(),
                batch,
            });
        }
        for child in &mut self.children {
            out.extend(child.transform.emit()?);
        }
        Ok(out)
    }

    /// The buffered rows as a batch; `None` when there are none, unless
    /// `even_empty` (and some column is declared).
    fn emit_own(&mut self, even_empty: bool) -> Result<Option<RecordBatch>, TransformError> {
        let rows = self.rows_pending;
        if rows == 0 && !(even_empty && self.columns.iter().any(|c| !c.dead)) {
            return Ok(None);
        }
        let mut fields = Vec::new();
        let mut arrays = Vec::new();
        let existing = self.policies.existing.get(&self.table);
        let first_batch = self.schema.is_none();
        for column in self.columns.iter_mut().filter(|c| !c.dead) {
            if matches!(column.builder, ColumnBuilder::Pending(_)) {
                if first_batch && existing.is_some_and(|t| was_flattened(t, &column.name)) {
                    // A field the table has as flattened columns
                    // (`extended_data_e_x`), absent from this run's
                    // records: not a new column of its own.
                    column.dead = true;
                    continue;
                }
                // No value yet: the type the table had, else VARCHAR.
                let old = existing
                    .and_then(|t| t.get(&column.name)?.as_ref())
                    .and_then(ColumnType::of_arrow);
                column.builder.settle(old.unwrap_or(ColumnType::Utf8));
            }
            let ty = column.builder.column_type().unwrap_or(ColumnType::Utf8);
            if let Some(array) = column.builder.finish() {
                fields.push(Field::new(&column.name, ty.arrow_type(), true));
                arrays.push(array);
            }
        }
        self.rows_pending = 0;
        let schema = match &self.schema {
            Some(s) if s.fields().len() == fields.len() => Arc::clone(s),
            _ => {
                let s = Arc::new(Schema::new(fields));
                self.schema = Some(Arc::clone(&s));
                s
            }
        };
        let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(rows));
        RecordBatch::try_new_with_options(schema, arrays, &options)
            .map(Some)
            .map_err(|source| TransformError::Arrow {
                stream: self.stream.clone(),
                source,
            })
    }
}

struct RecordCtx<'p, 'a> {
    /// The top-level record (its `id` names it in errors).
    pairs: &'p [(Cow<'a, str>, Raw<'a>)],
    index: usize,
    at: &'p PageRef<'p>,
    /// Arrays of objects met in the record: (child table, JSON text),
    /// written once the record's key is known.
    arrays: Vec<(usize, &'a str)>,
}

/// The value of a raw JSON value that is not an object. The common kinds
/// (plain strings, integers, null) are read inline: returned through a
/// call, the 32-byte value stalled the caller's copy of it (set_value's
/// hottest instruction in `perf annotate`).
#[inline(always)]
fn scalar(raw: Raw<'_>) -> Result<Scalar<'_>, serde_json::Error> {
    let text = raw.text;
    Ok(match raw.kind {
        Kind::Null => Scalar::Null,
        Kind::Bool(b) => Scalar::Bool(b),
        Kind::Str { escaped: false } => Scalar::Str(Cow::Borrowed(
            text.get(1..text.len().saturating_sub(1))
                .unwrap_or_default(),
        )),
        Kind::Object | Kind::Array => Scalar::Json(text),
        Kind::Number => match text.parse::<i64>() {
            Ok(i) => Scalar::Int(i),
            Err(_) => return uncommon_scalar(raw),
        },
        Kind::Str { escaped: true } => return uncommon_scalar(raw),
    })
}

/// [`scalar`] of an escaped string, an integer past i64 (kept as its
/// digits) or a number with a fraction or exponent.
#[cold]
#[inline(never)]
fn uncommon_scalar(raw: Raw<'_>) -> Result<Scalar<'_>, serde_json::Error> {
    let text = raw.text;
    Ok(match raw.kind {
        Kind::Number if !text.contains(['.', 'e', 'E']) => Scalar::BigInt(text),
        Kind::Number => Scalar::Float(match text.parse::<f64>() {
            // The reader checked the JSON number syntax, which Rust's
            // parser accepts and rounds exactly; serde_json says why a
            // number out of range is refused.
            Ok(f) if f.is_finite() => f,
            _ => serde_json::from_str::<f64>(text)?,
        }),
        Kind::Str { .. } => Scalar::Str(Cow::Owned(json::unescape(text)?)),
        _ => scalar(raw)?,
    })
}

#[cfg(test)]
mod tests;
