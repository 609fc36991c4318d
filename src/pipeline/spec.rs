//! The pipeline file format, version 1: the types serde reads a pipeline YAML
//! into. Every field's doc comment is user documentation.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::Deserialize;

use super::Secret;

/// A pipeline: where to read (one Lucca tenant), what to read (streams) and
/// where to write (one destination).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// Format version of this file. Only `1` exists.
    pub version: u32,
    /// Name of the pipeline, used in logs and run history.
    pub name: String,
    /// The Lucca tenant to read from.
    pub source: SourceSpec,
    /// The collections to copy; each becomes one table or one directory of
    /// Parquet files.
    pub streams: Vec<StreamSpec>,
    /// Where the data lands: `duckdb: { path: ... }` or `parquet: { dir: ... }`.
    // The `duckdb: { path: ... }` map form; serde_norway reads bare enums
    // only from YAML tags (`!duckdb`).
    #[serde(with = "serde_norway::with::singleton_map")]
    #[schemars(with = "DestinationSpec")]
    pub destination: DestinationSpec,
    /// Key of the HMAC-SHA256 that `pii: hash` columns are hashed with,
    /// normally `${LUCCA_PII_KEY}`: the same key gives the same hashes in
    /// every table and run, so hashed columns still join. Never logged. At
    /// most one of `pii_key` and `pii_key_file`.
    #[serde(default)]
    pub pii_key: Option<Secret>,
    /// A file holding the PII hashing key (e.g. a mounted Kubernetes Secret);
    /// leading and trailing white space is ignored.
    #[serde(default)]
    pub pii_key_file: Option<PathBuf>,
}

/// The Lucca tenant and how to talk to it.
#[derive(Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// Base URL of the tenant, e.g. `https://acme.ilucca.net`. Must be https,
    /// except for loopback hosts (the sandbox). `${VAR}` reads the environment.
    pub base_url: String,
    /// The API key, normally `${LUCCA_API_KEY}`. Exactly one of `api_key` and
    /// `api_key_file` must be set. Never logged.
    #[serde(default)]
    pub api_key: Option<String>,
    /// A file holding the API key (e.g. a mounted Kubernetes Secret); leading
    /// and trailing white space is ignored.
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// Requests per minute allowed to this tenant host, shared by all streams
    /// of a run: a number, or `unlimited`. Default 50 (Lucca's documented limit).
    /// Requests are spaced evenly, so no 60-second window ever holds more.
    #[serde(default)]
    pub rate_limit_per_minute: RateLimit,
    /// Attempts per page before giving up on a transient error (default 6).
    /// 429s do not count: they are bounded by `max_retry_wait_secs`.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Longest total time, in seconds, spent waiting between attempts of one
    /// page (backoff and Retry-After together, 429s included; default 300).
    #[serde(default)]
    pub max_retry_wait_secs: Option<u64>,
    /// Longest `Retry-After`, in seconds, the run accepts to wait; a longer one
    /// fails the stream (default 120).
    #[serde(default)]
    pub max_retry_after_secs: Option<u64>,
    /// TCP connect timeout, in seconds (default 10).
    #[serde(default)]
    pub connect_timeout_secs: Option<u64>,
    /// Timeout of one whole request, body included, in seconds (default 60).
    #[serde(default)]
    pub request_timeout_secs: Option<u64>,
}

impl fmt::Debug for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceSpec")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("api_key_file", &self.api_key_file)
            .field("rate_limit_per_minute", &self.rate_limit_per_minute)
            .finish_non_exhaustive()
    }
}

/// A request budget: `unlimited` or a number of requests per minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimit {
    /// No pacing at all (benchmarks, the sandbox).
    Unlimited,
    /// At most this many requests in any 60-second window.
    PerMinute(u32),
}

impl RateLimit {
    /// Requests per minute, `None` when unlimited.
    pub fn per_minute(self) -> Option<u32> {
        match self {
            RateLimit::Unlimited => None,
            RateLimit::PerMinute(n) => Some(n),
        }
    }
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit::PerMinute(50)
    }
}

// A visitor (not an untagged enum) so that serde_norway places errors on the
// value itself rather than on the enclosing mapping.
impl<'de> Deserialize<'de> for RateLimit {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = RateLimit;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of requests per minute or `unlimited`")
            }

            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<RateLimit, E> {
                match u32::try_from(n) {
                    Ok(0) => Err(E::custom(
                        "rate_limit_per_minute must be at least 1 (or `unlimited`)",
                    )),
                    Ok(n) => Ok(RateLimit::PerMinute(n)),
                    Err(_) => Err(E::custom(format!(
                        "rate_limit_per_minute {n} is too large (use `unlimited`)"
                    ))),
                }
            }

            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<RateLimit, E> {
                match u64::try_from(n) {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::custom(
                        "rate_limit_per_minute must be at least 1 (or `unlimited`)",
                    )),
                }
            }

            fn visit_str<E: serde::de::Error>(self, t: &str) -> Result<RateLimit, E> {
                match t.parse::<u64>() {
                    Ok(n) => self.visit_u64(n),
                    Err(_) if t == "unlimited" => Ok(RateLimit::Unlimited),
                    Err(_) => Err(E::custom(format!(
                        "rate_limit_per_minute must be a number or `unlimited`, not `{t}`"
                    ))),
                }
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl JsonSchema for RateLimit {
    fn schema_name() -> Cow<'static, str> {
        "RateLimit".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Requests per minute (at least 1), or `unlimited`.",
            "oneOf": [
                { "type": "integer", "minimum": 1, "maximum": 4294967295u64 },
                { "const": "unlimited" }
            ]
        })
    }
}

/// One collection to copy.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamSpec {
    /// Name of the stream; the table name (DuckDB) or directory name (Parquet).
    /// Letters, digits and `_`, starting with a letter; not starting with
    /// `lucca_sync` nor holding `__` (lucca-sync's own tables, views and
    /// child tables). Default, for a catalog endpoint: the catalog name
    /// with `-` as `_` (`legal_units`).
    #[serde(default)]
    pub name: String,
    /// A catalog endpoint (`users`, `leaves`, ...; `lucca-sync endpoints`
    /// lists them), whose path, paging, page size, params, fields, primary
    /// key, column types, incremental cursor and slice the stream inherits
    /// (anything the stream sets wins); or a path on the tenant, e.g.
    /// `/api/v3/users`.
    pub endpoint: String,
    /// How the endpoint pages: `v3` (`paging=offset,limit`), `v4`
    /// (`limit` + `page`) or `cursor` (`links.next.href`). Default `v3`, or
    /// the catalog endpoint's.
    #[serde(default)]
    pub paging: Option<PagingStyle>,
    /// For `v3` streams: `id` pages by primary key (`orderBy=id,asc` and
    /// `id=greaterthan,{last}`), which neither skips nor repeats records when
    /// the collection changes during the sync; `offset` uses plain offsets.
    /// Default: `id` when `primary_key` is `id`, else `offset`.
    #[serde(default)]
    pub page_by: Option<PageBy>,
    /// Records asked per request. Default: v3 1000, v4 100, cursor 100 (or
    /// the catalog endpoint's maximum when smaller). Maximum: the catalog
    /// endpoint's (users 1000, leaves 10000), else v3 10000, v4 and
    /// cursor 1000.
    #[serde(default)]
    pub page_size: Option<u32>,
    /// Extra query parameters sent as they are, e.g. `{ formerEmployees: "true" }`.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Fields to ask for, in Lucca's projection syntax, one per item:
    /// `id`, `manager[id,name]`. Nested objects become `parent_child` columns.
    #[serde(default)]
    pub fields: Vec<String>,
    /// The field(s) that identify a record, e.g. `id`.
    #[serde(default)]
    pub primary_key: Option<PrimaryKey>,
    /// Incremental extraction: only records changed since the last run.
    #[serde(default)]
    pub incremental: Option<IncrementalSpec>,
    /// Date-window slicing: one query per window with
    /// `{field}=between,{start},{end}`, windows read in order, e.g.
    /// `{ field: date, from: 2020-01-01, to: today, step: 1 month }`. With
    /// `write_mode: merge` or `append`, later runs re-read only the windows
    /// from the last run's date minus `lookback`.
    #[serde(default)]
    pub slice: Option<SliceSpec>,
    /// What a run does to the existing table: `replace` (default), `append`
    /// or `merge`. An `incremental` stream needs `merge` or `append`: it
    /// reads only the changed records.
    #[serde(default)]
    pub write_mode: WriteMode,
    /// Parquet destinations only: columns whose values split the stream's
    /// files into Hive-style directories (`{column}={value}/`), e.g.
    /// `[legal_entity_id]`. The columns are stored in the directory names,
    /// not in the files (read with `hive_partitioning`).
    #[serde(default)]
    pub partition_by: Vec<String>,
    /// Per-column settings, keyed by column name (as in the table, e.g.
    /// `mail`, `department_name`): a declared `type` instead of the
    /// inferred one, and a `pii` policy.
    #[serde(default)]
    pub columns: BTreeMap<String, ColumnSpec>,
    /// A value that does not fit its column's type: `fail` (default) stops
    /// the stream naming the record, field and value; `null` stores NULL
    /// instead and reports how many values were nulled.
    #[serde(default)]
    pub on_bad_value: OnBadValue,
    /// A field the destination table does not have yet (a new Lucca field,
    /// a new `extendedData` entry): `add` (default) adds a nullable column
    /// and reports it in the log and the run summary; `fail` stops the
    /// stream naming the field's path; `ignore` does not store it but still
    /// reports it. A table's first run takes every field.
    #[serde(default)]
    pub on_schema_change: OnSchemaChange,
    /// Arrays of objects, e.g. `userWorkCycles`: `table` (default) writes
    /// their items into a child table `{stream}__{field}` (e.g.
    /// `users__user_work_cycles`) carrying the parent's primary key as
    /// `{stream}_{key}` (e.g. `users_id`) and the item's position as
    /// `list_index`; `json` keeps each array as JSON text in one column.
    /// A stream without a `primary_key` keeps JSON. Arrays of scalars are
    /// always JSON text.
    #[serde(default)]
    pub arrays: ArrayPolicy,
    /// Nested objects become `parent_child` columns down to this depth
    /// (default 3); deeper objects are kept as JSON text.
    #[serde(default)]
    pub flatten_depth: Option<u32>,
    /// Column names: `snake_case` (default; `dtContractStart` ->
    /// `dt_contract_start`, `manager.name` -> `manager_name`) or `original`
    /// (Lucca's spelling, nested paths joined with `_`: `manager_name`,
    /// `dtContractStart`).
    #[serde(default)]
    pub naming: Naming,
}

/// What a field the destination table does not have yet does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnSchemaChange {
    /// A new nullable column, reported.
    #[default]
    Add,
    /// The stream fails, naming the field's path.
    Fail,
    /// Not stored, reported.
    Ignore,
}

/// Where the items of an array of objects go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ArrayPolicy {
    /// A child table `{stream}__{field}` with the parent's key.
    #[default]
    Table,
    /// One JSON text column.
    Json,
}

/// How column names are spelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Naming {
    /// `dt_contract_start`.
    #[default]
    SnakeCase,
    /// `dtContractStart`, as Lucca spells it.
    Original,
}

/// Settings of one column.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    /// The column's type instead of the inferred one: `bigint`, `double`,
    /// `decimal(p,s)` (exact, e.g. `decimal(12,2)` for amounts), `boolean`,
    /// `string`, `date`, `timestamp` (naive), `timestamptz` or `json`.
    #[serde(default, rename = "type")]
    pub data_type: Option<DeclaredType>,
    /// The Lucca field this column reads, dotted (`manager.name`,
    /// `extendedData.e_bloodType`), when the column's name (the key) is not
    /// the field's own: the field is stored under this name.
    #[serde(default)]
    pub path: Option<String>,
    /// `keep` (default), `hash` (HMAC-SHA256 with the pipeline's `pii_key`,
    /// as 64 hex characters) or `drop` (the column is not stored).
    #[serde(default)]
    pub pii: PiiPolicy,
    /// Set when `data_type` came from the endpoint catalog, not from the
    /// file: the likely type (often a guess), which values of the first
    /// batch may still widen, as an inferred type.
    #[serde(skip)]
    #[schemars(skip)]
    pub type_from_catalog: bool,
}

/// A declared column type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeclaredType {
    /// 64-bit integer.
    Bigint,
    /// 64-bit float.
    Double,
    /// Exact decimal with `precision` digits, `scale` of them after the point.
    Decimal {
        /// Total digits, 1 to 38.
        precision: u8,
        /// Digits after the point, at most `precision`.
        scale: u8,
    },
    /// true / false.
    Boolean,
    /// Text; numbers and booleans are stored as their JSON text.
    String,
    /// `yyyy-mm-dd`.
    Date,
    /// A date and time without zone, as Lucca writes local times.
    Timestamp,
    /// A date and time with `Z` or an offset, stored as UTC.
    Timestamptz,
    /// JSON text.
    Json,
}

/// The names of the declared types without parameters.
const SIMPLE_TYPES: [(&str, DeclaredType); 8] = [
    ("bigint", DeclaredType::Bigint),
    ("double", DeclaredType::Double),
    ("boolean", DeclaredType::Boolean),
    ("string", DeclaredType::String),
    ("date", DeclaredType::Date),
    ("timestamp", DeclaredType::Timestamp),
    ("timestamptz", DeclaredType::Timestamptz),
    ("json", DeclaredType::Json),
];

impl std::str::FromStr for DeclaredType {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let t = text.trim().to_ascii_lowercase();
        if let Some((_, ty)) = SIMPLE_TYPES.iter().find(|(name, _)| *name == t) {
            return Ok(*ty);
        }
        let expected = "expected bigint, double, decimal(p,s), boolean, string, date, timestamp, timestamptz or json";
        let Some(args) = t
            .strip_prefix("decimal")
            .map(str::trim)
            .and_then(|a| a.strip_prefix('('))
            .and_then(|a| a.strip_suffix(')'))
        else {
            return Err(format!("unknown column type `{text}`: {expected}"));
        };
        let numbers: Vec<Option<u8>> = args.split(',').map(|n| n.trim().parse().ok()).collect();
        match numbers[..] {
            [Some(precision), Some(scale)]
                if (1..=38).contains(&precision) && scale <= precision =>
            {
                Ok(DeclaredType::Decimal { precision, scale })
            }
            _ => Err(format!(
                "`{text}`: a decimal is `decimal(p,s)` with 1 <= p <= 38 and 0 <= s <= p, e.g. `decimal(12,2)`"
            )),
        }
    }
}

impl fmt::Display for DeclaredType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeclaredType::Decimal { precision, scale } => write!(f, "decimal({precision},{scale})"),
            other => {
                let name = SIMPLE_TYPES
                    .iter()
                    .find(|(_, ty)| ty == other)
                    .map_or("?", |(name, _)| name);
                f.write_str(name)
            }
        }
    }
}

impl<'de> Deserialize<'de> for DeclaredType {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = DeclaredType;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a column type such as `bigint` or `decimal(12,2)`")
            }

            fn visit_str<E: serde::de::Error>(self, t: &str) -> Result<DeclaredType, E> {
                t.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

impl JsonSchema for DeclaredType {
    fn schema_name() -> Cow<'static, str> {
        "DeclaredType".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A column type: bigint, double, decimal(p,s), boolean, string, date, timestamp, timestamptz or json.",
            "type": "string",
            "pattern": "^(bigint|double|boolean|string|date|timestamp|timestamptz|json|decimal\\( *[0-9]+ *, *[0-9]+ *\\))$"
        })
    }
}

/// What happens to a column holding personal data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PiiPolicy {
    /// Stored as read.
    #[default]
    Keep,
    /// Replaced by its keyed HMAC-SHA256 (hex): joinable, not readable.
    Hash,
    /// Not stored at all.
    Drop,
}

/// What a value that does not fit its column does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnBadValue {
    /// The stream fails, naming the record id, field and value.
    #[default]
    Fail,
    /// NULL is stored and counted in the run's log.
    Null,
}

/// Paging styles of the Lucca APIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PagingStyle {
    /// Legacy v3: `paging={offset},{limit}`, envelope `data.items`/`data.count`.
    #[default]
    V3,
    /// Legacy v4: `limit` and 1-based `page`, envelope `items`/`count`.
    V4,
    /// The newer Lucca API: follow `links.next.href`.
    Cursor,
}

impl PagingStyle {
    /// The style's name as written in a pipeline file.
    pub fn name(self) -> &'static str {
        match self {
            PagingStyle::V3 => "v3",
            PagingStyle::V4 => "v4",
            PagingStyle::Cursor => "cursor",
        }
    }

    /// Largest page size any endpoint of this style is documented or seen
    /// to accept: v3 leaves up to 10000, Lucca API endpoints up to 1000. An
    /// endpoint that serves fewer than asked is still read to its count.
    pub fn max_page_size(self) -> u32 {
        match self {
            PagingStyle::V3 => 10_000,
            PagingStyle::V4 => 1000,
            PagingStyle::Cursor => 1000,
        }
    }

    /// The page size a stream asks for unless it or its catalog endpoint
    /// says otherwise: the largest every endpoint of the style accepts
    /// (v3: users' 1000; v4: legal units' 100; Lucca API: 100).
    pub fn default_page_size(self) -> u32 {
        match self {
            PagingStyle::V3 => 1000,
            PagingStyle::V4 => 100,
            PagingStyle::Cursor => 100,
        }
    }
}

/// How a `v3` stream walks its collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PageBy {
    /// Keyset paging on `id`.
    Id,
    /// Offset paging.
    Offset,
}

/// One field name or several (a composite key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrimaryKey {
    /// A single field, e.g. `id`.
    Single(String),
    /// Several fields, e.g. `[ownerId, date]`.
    Composite(Vec<String>),
}

impl PrimaryKey {
    /// The key's field names, in order.
    pub fn fields(&self) -> Vec<&str> {
        match self {
            PrimaryKey::Single(f) => vec![f.as_str()],
            PrimaryKey::Composite(fs) => fs.iter().map(String::as_str).collect(),
        }
    }
}

// A visitor (not an untagged enum) so that serde_norway places errors on the
// value itself rather than on the enclosing mapping.
impl<'de> Deserialize<'de> for PrimaryKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = PrimaryKey;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name or a list of field names")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PrimaryKey, E> {
                Ok(PrimaryKey::Single(v.to_owned()))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<PrimaryKey, A::Error> {
                let mut fields = Vec::new();
                while let Some(field) = seq.next_element::<String>()? {
                    fields.push(field);
                }
                Ok(PrimaryKey::Composite(fields))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl JsonSchema for PrimaryKey {
    fn schema_name() -> Cow<'static, str> {
        "PrimaryKey".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A field name, or a list of field names (a composite key).",
            "oneOf": [
                { "type": "string" },
                { "type": "array", "items": { "type": "string" }, "minItems": 1 }
            ]
        })
    }
}

/// Incremental extraction settings.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IncrementalSpec {
    /// Field holding the last-modified time, e.g. `modifiedAt`; sent as
    /// `{cursor_field}=since,{cursor}`.
    pub cursor_field: String,
    /// Seconds subtracted from the stored cursor to cover clock skew (default 300).
    #[serde(default)]
    pub lookback_secs: Option<u64>,
}

/// Date-window slicing of a stream. Every part may be left out when the
/// catalog endpoint gives it (the stream's parts win).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SliceSpec {
    /// The date field filtered with `{field}=between,{start},{end}`, e.g. `date`.
    #[serde(default)]
    pub field: Option<String>,
    /// First day of the first window, `yyyy-mm-dd`.
    #[serde(default)]
    pub from: Option<String>,
    /// Last day read: `yyyy-mm-dd`, `today` (default), or `today + N unit` /
    /// `today - N unit` (e.g. `today + 1 year`, to read planned absences).
    #[serde(default)]
    pub to: Option<String>,
    /// Window length: `N day(s)`, `N week(s)`, `N month(s)` or `N year(s)`,
    /// e.g. `1 month`. Windows start at `from`, every `step`.
    #[serde(default)]
    pub step: Option<String>,
    /// With `write_mode: merge` or `append`: how far before the last run's
    /// date the next run starts re-reading windows (default: one `step`),
    /// e.g. `3 months` to catch late corrections.
    #[serde(default)]
    pub lookback: Option<String>,
}

/// What a run does to the existing table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WriteMode {
    /// The table is replaced by this run's records.
    #[default]
    Replace,
    /// This run's records are added, tagged with the run id.
    Append,
    /// Records are upserted on `primary_key`.
    Merge,
}

/// Where the data lands: exactly one of `duckdb` and `parquet`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum DestinationSpec {
    /// A DuckDB database file; one table per stream.
    Duckdb(DuckdbDestination),
    /// A directory of Parquet files; one sub-directory of files per stream.
    Parquet(ParquetDestination),
}

/// A DuckDB database file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DuckdbDestination {
    /// Path of the database file, created if missing, e.g. `out/lucca.duckdb`.
    pub path: PathBuf,
}

/// A directory of Parquet files, one sub-directory per stream.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParquetDestination {
    /// Directory that receives one `{stream}/` directory of Parquet files per
    /// stream, created if missing.
    pub dir: PathBuf,
}
