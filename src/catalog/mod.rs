//! The built-in catalog of Lucca endpoints, as data (`endpoints.yaml`): what
//! a customer would otherwise have to know per endpoint (path, paging style,
//! page-size limit, fields, key, types, change filter, required filters), so
//! that a stream can say `endpoint: users` and inherit it all.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;

use crate::pipeline::{DeclaredType, PagingStyle, PrimaryKey, SliceSpec};

/// The catalog's source, compiled in.
const ENDPOINTS_YAML: &str = include_str!("endpoints.yaml");

/// One endpoint of the catalog.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// What `endpoint:` in a pipeline refers to, e.g. `legal-units`.
    pub name: String,
    /// One line saying what the records are.
    pub description: String,
    /// Path on the tenant.
    pub path: String,
    /// Paging style.
    pub paging: PagingStyle,
    /// Largest page size the endpoint accepts (and the default).
    pub max_page_size: u32,
    /// Query parameters sent by default (e.g. a required owner filter).
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Default projection, Lucca syntax, one item each.
    pub fields: Vec<String>,
    /// Primary key.
    pub primary_key: PrimaryKey,
    /// Field of the change filter (`{cursor}=since,...`), where one exists.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Declared column types, keyed by column name.
    #[serde(default)]
    pub types: BTreeMap<String, DeclaredType>,
    /// Filters the API refuses to answer without (query parameter names).
    #[serde(default)]
    pub required_filters: Vec<String>,
    /// Default date-window slicing.
    #[serde(default)]
    pub slice: Option<SliceSpec>,
    /// What is known or guessed about the endpoint.
    #[serde(default)]
    pub notes: Option<String>,
}

impl Endpoint {
    /// The stream name a catalog endpoint gets by default: its name with
    /// `-` as `_` (a table name).
    pub fn default_stream_name(&self) -> String {
        self.name.replace('-', "_")
    }

    /// The paging style's name as written in a pipeline.
    pub fn paging_name(&self) -> &'static str {
        self.paging.name()
    }
}

/// The catalog could not be read (a bug of this build, caught by its tests).
#[derive(Debug, Clone, thiserror::Error)]
#[error("the built-in endpoint catalog is invalid: {0}")]
pub struct CatalogError(String);

/// Every endpoint of the catalog, in catalog order.
pub fn endpoints() -> Result<&'static [Endpoint], CatalogError> {
    static PARSED: OnceLock<Result<Vec<Endpoint>, CatalogError>> = OnceLock::new();
    PARSED
        .get_or_init(|| {
            serde_norway::from_str(ENDPOINTS_YAML).map_err(|e| CatalogError(e.to_string()))
        })
        .as_ref()
        .map(Vec::as_slice)
        .map_err(Clone::clone)
}

/// The endpoint called `name`, if any.
pub fn find(name: &str) -> Result<Option<&'static Endpoint>, CatalogError> {
    Ok(endpoints()?.iter().find(|e| e.name == name))
}

/// The catalog name closest to `name` (a typo), if one is close enough.
pub fn suggest(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase().replace('_', "-");
    endpoints()
        .ok()?
        .iter()
        .map(|e| (edit_distance(&lower, &e.name), e.name.as_str()))
        .filter(|(d, candidate)| *d <= 2.max(candidate.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

/// The catalog as a table: name, path, paging, description, one line each.
pub fn list_text(entries: &[Endpoint]) -> String {
    let name_w = entries
        .iter()
        .map(|e| e.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let path_w = entries
        .iter()
        .map(|e| e.path.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = format!(
        "{:name_w$}  {:path_w$}  PAGING  DESCRIPTION\n",
        "NAME", "PATH"
    );
    for e in entries {
        out.push_str(&format!(
            "{:name_w$}  {:path_w$}  {:6}  {}\n",
            e.name,
            e.path,
            e.paging_name(),
            e.description
        ));
    }
    out
}

/// Everything the catalog knows of one endpoint, for `lucca-sync endpoints NAME`.
pub fn detail_text(e: &Endpoint) -> String {
    use crate::pipeline::{leaf_paths, naming::column_name, parse_fields};
    let mut out = format!("{}: {}\n", e.name, e.description);
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:18}{v}\n"));
    line("path", e.path.clone());
    line(
        "paging",
        match e.paging.default_page_size() {
            default if default < e.max_page_size => format!(
                "{} (pages of up to {}, {default} by default)",
                e.paging_name(),
                e.max_page_size
            ),
            _ => format!("{} (pages of up to {})", e.paging_name(), e.max_page_size),
        },
    );
    line("primary key", e.primary_key.fields().join(", "));
    line(
        "incremental",
        match &e.cursor {
            Some(c) => format!("{c}=since,... (with write_mode: merge or append)"),
            None => "none (no known change filter)".to_owned(),
        },
    );
    if !e.params.is_empty() {
        let params: Vec<String> = e.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        line("params", params.join("&"));
    }
    if !e.required_filters.is_empty() {
        line("required filters", e.required_filters.join(", "));
    }
    if let Some(s) = &e.slice {
        let part = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
        line(
            "slice",
            format!(
                "{} from {} to {}, step {}, lookback {}",
                part(&s.field),
                part(&s.from),
                s.to.clone().unwrap_or_else(|| "today".to_owned()),
                part(&s.step),
                s.lookback
                    .clone()
                    .or_else(|| s.step.clone())
                    .unwrap_or_default()
            ),
        );
    }
    if let Some(notes) = &e.notes {
        line("notes", notes.clone());
    }
    out.push_str("fields (Lucca field, column, type):\n");
    let paths = parse_fields(&e.fields)
        .map(|tree| leaf_paths(&tree))
        .unwrap_or_default();
    let width = paths.iter().map(String::len).max().unwrap_or(0);
    for path in paths {
        let column = column_name(&path);
        let declared = e
            .types
            .get(&column)
            .map_or_else(|| "inferred".to_owned(), ToString::to_string);
        out.push_str(&format!("  {path:width$}  {column:width$}  {declared}\n"));
    }
    out
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests;
