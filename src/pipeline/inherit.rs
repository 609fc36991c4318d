//! Streams that name a catalog endpoint (`endpoint: users`) inherit its
//! settings here, before validation, so that `validate`, `run` and
//! `--dry-run` all see the same complete stream. Anything the stream sets
//! itself wins.

use super::Issue;
use super::fields::{leaf_paths, parse_fields};
use super::locate::{Locator, Seg};
use super::naming::column_name;
use super::spec::{IncrementalSpec, PipelineSpec, SliceSpec, StreamSpec, WriteMode};
use crate::catalog::{self, Endpoint};

/// True when `endpoint` is written as a catalog name rather than a path.
pub(crate) fn is_catalog_name(endpoint: &str) -> bool {
    !endpoint.is_empty()
        && endpoint
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Applies the catalog to every stream that names a catalog endpoint;
/// returns, per stream, the endpoint it inherited from. Unknown names are
/// reported at the stream's `endpoint`.
pub(crate) fn apply_catalog(
    spec: &mut PipelineSpec,
    locator: &Locator,
    issues: &mut Vec<Issue>,
) -> Vec<Option<&'static Endpoint>> {
    use Seg::{Index, Key};
    let mut found = Vec::with_capacity(spec.streams.len());
    for (i, stream) in spec.streams.iter_mut().enumerate() {
        if !is_catalog_name(&stream.endpoint) {
            found.push(None);
            continue;
        }
        let at = locator.value(&[Key("streams"), Index(i), Key("endpoint")]);
        match catalog::find(&stream.endpoint) {
            Ok(Some(entry)) => {
                inherit(stream, entry);
                found.push(Some(entry));
            }
            Ok(None) => {
                let hint = match catalog::suggest(&stream.endpoint) {
                    Some(name) => format!("did you mean `{name}`? "),
                    None => String::new(),
                };
                issues.push(Issue {
                    pos: at,
                    message: format!(
                        "`{}` is not a catalog endpoint: {hint}(`lucca-sync endpoints` lists \
                         them; a path on the tenant starts with `/`)",
                        stream.endpoint
                    ),
                });
                found.push(None);
            }
            Err(e) => {
                issues.push(Issue {
                    pos: at,
                    message: e.to_string(),
                });
                found.push(None);
            }
        }
    }
    found
}

/// Fills what `stream` leaves unset from `entry`.
fn inherit(stream: &mut StreamSpec, entry: &Endpoint) {
    if stream.name.is_empty() {
        stream.name = entry.default_stream_name();
    }
    stream.endpoint = entry.path.clone();
    stream.paging.get_or_insert(entry.paging);
    for (k, v) in &entry.params {
        stream.params.entry(k.clone()).or_insert_with(|| v.clone());
    }
    if stream.fields.is_empty() {
        stream.fields = entry.fields.clone();
    }
    if stream.primary_key.is_none() {
        stream.primary_key = Some(entry.primary_key.clone());
    }
    // Types and the cursor only for what the stream's fields still hold.
    let (columns, paths): (Vec<String>, Vec<String>) = match parse_fields(&stream.fields) {
        Ok(tree) => {
            let paths = leaf_paths(&tree);
            (paths.iter().map(|p| column_name(p)).collect(), paths)
        }
        Err(_) => (Vec::new(), Vec::new()),
    };
    for (column, declared) in &entry.types {
        if columns.contains(column) {
            let spec = stream.columns.entry(column.clone()).or_default();
            if spec.data_type.is_none() {
                spec.data_type = Some(*declared);
                spec.type_from_catalog = true;
            }
        }
    }
    if stream.incremental.is_none()
        && stream.write_mode != WriteMode::Replace
        && let Some(cursor) = &entry.cursor
        && paths.contains(cursor)
    {
        stream.incremental = Some(IncrementalSpec {
            cursor_field: cursor.clone(),
            lookback_secs: None,
        });
    }
    if let Some(default) = &entry.slice {
        let own = stream.slice.take().unwrap_or_default();
        stream.slice = Some(SliceSpec {
            field: own.field.or_else(|| default.field.clone()),
            from: own.from.or_else(|| default.from.clone()),
            to: own.to.or_else(|| default.to.clone()),
            step: own.step.or_else(|| default.step.clone()),
            lookback: own.lookback.or_else(|| default.lookback.clone()),
        });
    }
}
