//! The transform stage: turns each page's raw JSON records into typed Arrow
//! record batches with flat, snake_case columns, reading every value once
//! straight from the page body (no JSON tree per record).

mod column;
pub mod temporal;

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{Field, Schema, SchemaRef};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::pipeline::naming::snake_case;
pub use column::{ColumnBuilder, ColumnType, Scalar};

use crate::extract::Page;
use crate::pipeline::{
    ColumnSpec, DeclaredType, FieldNode, OnBadValue, PiiPolicy, Secret, StreamSpec,
};

/// Records read before the first batch is emitted: columns still without a
/// value by then become VARCHAR, so one null-only page never fixes a type.
pub const DEFAULT_WARMUP_ROWS: usize = 10_000;

/// Nested objects deeper than this are kept as JSON text.
pub const DEFAULT_MAX_DEPTH: usize = 3;

/// Why records could not become a batch.
#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    /// A record that is not a JSON object.
    #[error(
        "stream `{stream}`: page {page} ({url}): record {index} is not a JSON object: {message}"
    )]
    BadRecord {
        stream: String,
        page: u64,
        url: String,
        index: usize,
        message: String,
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
    /// Arrow refused the batch (a bug, reported rather than hidden).
    #[error("stream `{stream}`: cannot build a record batch: {source}")]
    Arrow {
        stream: String,
        source: arrow::error::ArrowError,
    },
}

/// One output column.
#[derive(Debug)]
struct Column {
    /// snake_case column name.
    name: String,
    /// Dotted source path, e.g. `manager.name`.
    path: String,
    builder: ColumnBuilder,
    /// Stamp of the last row that set this column.
    last_row: u64,
    /// A placeholder that turned out to be an object, or a column whose
    /// policy is `pii: drop`: not built, not emitted.
    dead: bool,
    /// `pii: hash`: values are replaced by their keyed HMAC-SHA256.
    hashed: bool,
}

/// How a stream's declared columns are built: types, PII policies, and
/// what a value that does not fit does.
#[derive(Debug, Clone, Default)]
pub struct ColumnPolicies {
    /// By column name.
    pub columns: HashMap<String, ColumnSpec>,
    /// Key of `pii: hash` columns.
    pub pii_key: Option<Secret>,
    /// Store NULL for a value that does not fit (`on_bad_value: null`).
    pub null_bad_values: bool,
}

impl ColumnPolicies {
    /// The policies a stream's spec declares.
    pub fn of(stream: &StreamSpec, pii_key: Option<Secret>) -> Self {
        ColumnPolicies {
            columns: stream
                .columns
                .iter()
                .map(|(name, spec)| (name.clone(), spec.clone()))
                .collect(),
            pii_key,
            null_bad_values: stream.on_bad_value == OnBadValue::Null,
        }
    }
}

/// The column type of a declared type.
fn declared(ty: DeclaredType) -> ColumnType {
    match ty {
        DeclaredType::Bigint => ColumnType::Int64,
        DeclaredType::Double => ColumnType::Float64,
        DeclaredType::Boolean => ColumnType::Boolean,
        DeclaredType::String => ColumnType::Utf8,
        DeclaredType::Date => ColumnType::Date,
        DeclaredType::Timestamp => ColumnType::Timestamp,
        DeclaredType::Timestamptz => ColumnType::TimestampTz,
        DeclaredType::Json => ColumnType::Json,
    }
}

/// `value` replaced by the hex HMAC-SHA256 of its text under `key`.
fn hashed(key: &Secret, value: &Scalar<'_>) -> Scalar<'static> {
    use hmac::{Hmac, Mac};
    let text = match value {
        Scalar::Null => return Scalar::Null,
        Scalar::Bool(b) => b.to_string(),
        Scalar::Int(i) => i.to_string(),
        Scalar::Float(f) => f.to_string(),
        Scalar::Str(s) => s.to_string(),
        Scalar::Json(j) => j.to_string(),
    };
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(key.expose().as_bytes()) else {
        return Scalar::Null;
    };
    mac.update(text.as_bytes());
    let digest = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push_str(&format!("{byte:02x}"));
    }
    Scalar::Str(Cow::Owned(hex))
}

type NodeId = usize;

#[derive(Debug)]
enum Node {
    Leaf(usize),
    Object {
        /// Keys as spelled in the data, for a lookup without allocation.
        exact: HashMap<Box<str>, NodeId>,
        /// Lower-cased keys: `cultureID` and `cultureId` are one column.
        folded: HashMap<Box<str>, NodeId>,
        path: String,
        name: String,
        depth: usize,
    },
}

/// Turns the pages of one stream into record batches.
#[derive(Debug)]
pub struct StreamTransform {
    stream: String,
    columns: Vec<Column>,
    nodes: Vec<Node>,
    row: u64,
    rows_pending: usize,
    emitted: bool,
    warmup_rows: usize,
    max_depth: usize,
    schema: Option<SchemaRef>,
    /// Dotted path of the incremental cursor field, lower-cased.
    cursor_path: Option<String>,
    /// Its column, once created.
    cursor_column: Option<usize>,
    /// The highest cursor value read: (sortable value, text as sent).
    max_cursor: Option<(i64, String)>,
    /// Declared types, PII policies, `on_bad_value`.
    policies: ColumnPolicies,
    /// Values stored as NULL because they did not fit (`on_bad_value: null`).
    nulled_values: u64,
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
            columns: Vec::new(),
            nodes: vec![Node::Object {
                exact: HashMap::new(),
                folded: HashMap::new(),
                path: String::new(),
                name: String::new(),
                depth: 0,
            }],
            row: 0,
            rows_pending: 0,
            emitted: false,
            warmup_rows: DEFAULT_WARMUP_ROWS,
            max_depth: DEFAULT_MAX_DEPTH,
            schema: None,
            cursor_path: None,
            cursor_column: None,
            max_cursor: None,
            policies: ColumnPolicies::default(),
            nulled_values: 0,
        };
        t.declare(0, fields);
        t
    }

    /// Applies declared types, PII policies and `on_bad_value`. Call
    /// before the first page.
    pub fn with_policies(mut self, policies: ColumnPolicies) -> Self {
        self.policies = policies;
        for column in 0..self.columns.len() {
            self.apply_policy(column);
        }
        self
    }

    /// Values stored as NULL because they did not fit their column.
    pub fn nulled_values(&self) -> u64 {
        self.nulled_values
    }

    fn apply_policy(&mut self, column: usize) {
        let col = &mut self.columns[column];
        let Some(spec) = self.policies.columns.get(&col.name) else {
            return;
        };
        match spec.pii {
            PiiPolicy::Drop => col.dead = true,
            PiiPolicy::Hash => {
                col.hashed = true;
                col.builder.settle(ColumnType::Utf8);
            }
            PiiPolicy::Keep => {
                if let Some(ty) = spec.data_type {
                    col.builder.settle(declared(ty));
                }
            }
        }
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
        self
    }

    /// The highest cursor value read so far, as the API wrote it.
    pub fn max_cursor(&self) -> Option<&str> {
        self.max_cursor.as_ref().map(|(_, text)| text.as_str())
    }

    /// Sets how many records are read before the first batch.
    pub fn with_warmup_rows(mut self, rows: usize) -> Self {
        self.warmup_rows = rows.max(1);
        self
    }

    fn declare(&mut self, parent: NodeId, fields: &[FieldNode]) {
        for field in fields {
            let id = if field.children.is_empty() {
                self.child(parent, &field.name, false)
            } else {
                self.child(parent, &field.name, true)
            };
            if let Some(id) = id
                && !field.children.is_empty()
            {
                self.declare(id, &field.children);
            }
        }
    }

    /// Finds or creates the child `key` of an object node. `None` when the
    /// object is past the flattening depth (the caller keeps JSON text).
    fn child(&mut self, parent: NodeId, key: &str, object: bool) -> Option<NodeId> {
        let Node::Object {
            exact,
            folded,
            path,
            name,
            depth,
        } = &mut self.nodes[parent]
        else {
            return None;
        };
        if let Some(id) = exact.get(key) {
            return Some(*id);
        }
        let lower = key.to_lowercase();
        if let Some(id) = folded.get(lower.as_str()).copied() {
            exact.insert(key.into(), id);
            return Some(id);
        }
        let child_path = if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        };
        let base_name = if name.is_empty() {
            snake_case(key)
        } else {
            format!("{name}_{}", snake_case(key))
        };
        let child_depth = *depth + 1;
        let id = self.nodes.len();
        if let Node::Object { exact, folded, .. } = &mut self.nodes[parent] {
            exact.insert(key.into(), id);
            folded.insert(lower.into(), id);
        }
        if object && child_depth <= self.max_depth {
            let name = self.unique_name(&base_name);
            self.nodes.push(Node::Object {
                exact: HashMap::new(),
                folded: HashMap::new(),
                path: child_path,
                name,
                depth: child_depth,
            });
        } else {
            let name = self.unique_name(&base_name);
            let column = self.columns.len();
            let mut builder = ColumnBuilder::Pending(0);
            for _ in 0..self.rows_pending {
                builder.append_null();
            }
            if object {
                builder.settle(ColumnType::Json);
            }
            if self
                .cursor_path
                .as_deref()
                .is_some_and(|c| c == child_path.to_lowercase())
            {
                self.cursor_column = Some(column);
            }
            self.columns.push(Column {
                name,
                path: child_path,
                builder,
                // Not set in the current record yet.
                last_row: self.row.wrapping_sub(1),
                dead: false,
                hashed: false,
            });
            self.apply_policy(column);
            self.nodes.push(Node::Leaf(column));
        }
        Some(id)
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

    /// Reads a page. Returns a batch once enough rows are buffered.
    pub fn push_page(&mut self, page: &Page) -> Result<Option<RecordBatch>, TransformError> {
        let at = PageRef {
            number: page.number,
            url: &page.url,
        };
        for (index, record) in page.records().enumerate() {
            self.push_record(record, index, &at)?;
        }
        if self.emitted || self.rows_pending >= self.warmup_rows {
            return self.emit();
        }
        Ok(None)
    }

    /// Emits whatever is still buffered.
    pub fn finish(&mut self) -> Result<Option<RecordBatch>, TransformError> {
        if self.rows_pending == 0 && self.emitted {
            return Ok(None);
        }
        self.emit()
    }

    fn push_record(
        &mut self,
        record: &[u8],
        index: usize,
        at: &PageRef,
    ) -> Result<(), TransformError> {
        let text =
            std::str::from_utf8(record).map_err(|e| self.bad_record(index, at, e.to_string()))?;
        let pairs = parse_object(text).map_err(|e| self.bad_record(index, at, e.to_string()))?;
        self.row += 1;
        let mut ctx = RecordCtx {
            pairs: &pairs,
            index,
            at,
        };
        self.fill_object(0, &pairs, &mut ctx)?;
        let row = self.row;
        for column in self.columns.iter_mut().filter(|c| !c.dead) {
            if column.last_row != row {
                column.builder.append_null();
                column.last_row = row;
            }
        }
        self.rows_pending += 1;
        Ok(())
    }

    fn fill_object(
        &mut self,
        node: NodeId,
        pairs: &[(Cow<'_, str>, &RawValue)],
        ctx: &mut RecordCtx,
    ) -> Result<(), TransformError> {
        for (key, raw) in pairs {
            let text = raw.get();
            let is_object = text.starts_with('{');
            let Some(child) = self.child(node, key, is_object) else {
                continue;
            };
            match &self.nodes[child] {
                Node::Object { .. } => {
                    if is_object {
                        let inner = parse_object(text).map_err(|e| {
                            self.bad_record(ctx.index, ctx.at, format!("field `{key}`: {e}"))
                        })?;
                        self.fill_object(child, &inner, ctx)?;
                    } else if text != "null" {
                        // A scalar where an object was declared.
                        let path = self.object_path(child);
                        return Err(self.bad_value(ctx, &path, &path, ColumnType::Json, text));
                    }
                }
                Node::Leaf(column) => {
                    let column = *column;
                    if is_object
                        && matches!(self.columns[column].builder, ColumnBuilder::Pending(_))
                    {
                        // Declared as a plain field, but it is an object:
                        // flatten it instead.
                        self.columns[column].dead = true;
                        let (path, name) = self.leaf_naming(column);
                        let depth = self.node_depth(node) + 1;
                        self.nodes[child] = Node::Object {
                            exact: HashMap::new(),
                            folded: HashMap::new(),
                            path,
                            name,
                            depth,
                        };
                        let inner = parse_object(text).map_err(|e| {
                            self.bad_record(ctx.index, ctx.at, format!("field `{key}`: {e}"))
                        })?;
                        self.fill_object(child, &inner, ctx)?;
                        continue;
                    }
                    let value = scalar(text).map_err(|e| {
                        self.bad_record(ctx.index, ctx.at, format!("field `{key}`: {e}"))
                    })?;
                    let row = self.row;
                    let col = &mut self.columns[column];
                    if col.last_row == row || col.dead {
                        // The same field twice (e.g. `cultureID` and
                        // `cultureId` on one record): the first non-null
                        // wins. A dropped column keeps nothing.
                        continue;
                    }
                    let value = match (&self.policies.pii_key, col.hashed) {
                        (Some(key), true) => hashed(key, &value),
                        // Validation requires a key; without one nothing
                        // personal is ever stored in clear.
                        (None, true) => Scalar::Null,
                        (_, false) => value,
                    };
                    if !col.builder.append(&value) {
                        if self.policies.null_bad_values {
                            col.builder.append_null();
                            self.nulled_values += 1;
                        } else {
                            let (path, name, ty) = (
                                col.path.clone(),
                                col.name.clone(),
                                col.builder.column_type().unwrap_or(ColumnType::Utf8),
                            );
                            return Err(self.bad_value(ctx, &path, &name, ty, &value.shown()));
                        }
                    }
                    let col = &mut self.columns[column];
                    col.last_row = row;
                    if self.cursor_column == Some(column) {
                        self.track_cursor(&value);
                    }
                }
            }
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
        if self
            .max_cursor
            .as_ref()
            .is_none_or(|(best, _)| rank > *best)
        {
            self.max_cursor = Some((rank, text));
        }
    }

    fn leaf_naming(&self, column: usize) -> (String, String) {
        let c = &self.columns[column];
        (c.path.clone(), c.name.clone())
    }

    fn node_depth(&self, node: NodeId) -> usize {
        match &self.nodes[node] {
            Node::Object { depth, .. } => *depth,
            Node::Leaf(_) => 0,
        }
    }

    fn object_path(&self, node: NodeId) -> String {
        match &self.nodes[node] {
            Node::Object { path, .. } => path.clone(),
            Node::Leaf(c) => self.columns[*c].path.clone(),
        }
    }

    fn bad_record(&self, index: usize, at: &PageRef, message: String) -> TransformError {
        TransformError::BadRecord {
            stream: self.stream.clone(),
            page: at.number,
            url: at.url.to_owned(),
            index,
            message,
        }
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
            .map(|(_, v)| v.get().trim_matches('"').to_owned())
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

    fn emit(&mut self) -> Result<Option<RecordBatch>, TransformError> {
        let rows = self.rows_pending;
        let mut fields = Vec::new();
        let mut arrays = Vec::new();
        for column in self.columns.iter_mut().filter(|c| !c.dead) {
            column.builder.settle(ColumnType::Utf8);
            let ty = column.builder.column_type().unwrap_or(ColumnType::Utf8);
            if let Some(array) = column.builder.finish() {
                fields.push(Field::new(&column.name, ty.arrow_type(), true));
                arrays.push(array);
            }
        }
        self.rows_pending = 0;
        self.emitted = true;
        if rows == 0 {
            return Ok(None);
        }
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
    pairs: &'p [(Cow<'a, str>, &'a RawValue)],
    index: usize,
    at: &'p PageRef<'p>,
}

/// Reads one JSON object into its key/raw-value pairs, borrowing from `text`.
fn parse_object(text: &str) -> Result<Vec<(Cow<'_, str>, &RawValue)>, serde_json::Error> {
    struct Pairs<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);
    struct PairsVisitor;
    impl<'de> Visitor<'de> for PairsVisitor {
        type Value = Pairs<'de>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Pairs<'de>, A::Error> {
            let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(16));
            while let Some(key) = map.next_key_seed(KeySeed)? {
                let value: &'de RawValue = map.next_value()?;
                pairs.push((key, value));
            }
            Ok(Pairs(pairs))
        }
    }
    impl<'de> serde::Deserialize<'de> for Pairs<'de> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_map(PairsVisitor)
        }
    }
    serde_json::from_str::<Pairs>(text).map(|p| p.0)
}

/// A key, borrowed unless it had escapes.
struct KeySeed;
impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}
impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string key")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// Reads a raw JSON value that is not an object.
fn scalar(text: &str) -> Result<Scalar<'_>, serde_json::Error> {
    Ok(match text.as_bytes().first() {
        Some(b'n') => Scalar::Null,
        Some(b't') => Scalar::Bool(true),
        Some(b'f') => Scalar::Bool(false),
        Some(b'"') if !text.contains('\\') && text.len() >= 2 => {
            Scalar::Str(Cow::Borrowed(&text[1..text.len() - 1]))
        }
        Some(b'"') => Scalar::Str(Cow::Owned(serde_json::from_str::<String>(text)?)),
        Some(b'[') | Some(b'{') => Scalar::Json(text),
        _ => match text.parse::<i64>() {
            Ok(i) => Scalar::Int(i),
            Err(_) => Scalar::Float(serde_json::from_str::<f64>(text)?),
        },
    })
}

#[cfg(test)]
mod tests;
