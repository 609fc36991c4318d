//! Runtime settings that are not part of a pipeline (log format and level,
//! default timeouts and retry limits), layered with the `config` crate:
//! built-in defaults, then an optional `lucca-sync.toml`, then `LUCCA_SYNC_*`
//! environment variables; command-line flags are applied last by the binary.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::extract::{RetrySettings, Timeouts};
use crate::pipeline::SourceSpec;

/// How log lines are written on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable on a terminal, JSON otherwise.
    #[default]
    Auto,
    /// Human-readable text.
    Text,
    /// One JSON object per line.
    Json,
}

/// Settings of the tool itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `auto`, `text` or `json`.
    pub log_format: LogFormat,
    /// A tracing filter, e.g. `info` or `lucca_sync=debug`.
    pub log_level: String,
    /// Default TCP connect timeout, seconds.
    pub connect_timeout_secs: u64,
    /// Default timeout of a whole request, seconds.
    pub request_timeout_secs: u64,
    /// Default attempts per page.
    pub max_attempts: u32,
    /// Default longest total wait between attempts of one page, seconds.
    pub max_retry_wait_secs: u64,
    /// Default longest accepted `Retry-After`, seconds.
    pub max_retry_after_secs: u64,
    /// First backoff interval, milliseconds (doubles on each retry, jittered).
    pub retry_backoff_min_ms: u64,
    /// Largest backoff interval, milliseconds.
    pub retry_backoff_max_ms: u64,
    /// Memory DuckDB may use while loading (its `memory_limit`, e.g.
    /// `32MB`, the default): keeps the process flat however big the tables;
    /// DuckDB evicts loaded blocks to the file and spills the rest to a
    /// temporary file next to the database beyond it. While rows stream in,
    /// DuckDB gets half of it: it only needs the row groups being filled
    /// (30,720 rows: about 5 MB for 13 columns, one per stream loading at
    /// the time), and would fill the rest with blocks it already wrote.
    /// Publishing an `append` or `merge` stream gets all of it: merging 1M
    /// records into a table of 1M (a join over both) ran out of memory at
    /// 16 MB and took 5.0 s of the run at 32 MB (4.8 s at 64 MB). Raise it
    /// for larger merges, wide tables or many large streams.
    pub duckdb_memory_limit: String,
}

/// Every setting with its default, as text (parsed into the field's type).
const DEFAULTS: &[(&str, &str)] = &[
    ("log_format", "auto"),
    ("log_level", "info"),
    ("connect_timeout_secs", "10"),
    ("request_timeout_secs", "60"),
    ("max_attempts", "6"),
    ("max_retry_wait_secs", "300"),
    ("max_retry_after_secs", "120"),
    ("retry_backoff_min_ms", "1000"),
    ("retry_backoff_max_ms", "60000"),
    ("duckdb_memory_limit", "32MB"),
];

/// The `LUCCA_SYNC_*` variables that name a setting. Others with the prefix
/// (`LUCCA_SYNC_LOG`, read by the binary, or a deployment's own) are left
/// alone instead of failing the run as unknown settings; the settings file
/// still rejects unknown keys.
fn settings_env(
    vars: impl Iterator<Item = (String, String)>,
) -> std::collections::HashMap<String, String> {
    vars.filter(|(name, _)| {
        name.strip_prefix("LUCCA_SYNC_")
            .is_some_and(|key| DEFAULTS.iter().any(|(k, _)| k.eq_ignore_ascii_case(key)))
    })
    .collect()
}

/// A size DuckDB takes as a `memory_limit`: a number and a unit (B, KB,
/// MB, GB, TB, KiB, MiB, GiB, TiB, any case) or a percentage of the RAM.
fn is_memory_size(text: &str) -> bool {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let number_ok = text[..split].parse::<f64>().is_ok_and(|n| n > 0.0);
    let unit = text[split..].trim().to_ascii_lowercase();
    number_ok
        && matches!(
            unit.as_str(),
            "" | "%" | "b" | "kb" | "mb" | "gb" | "tb" | "kib" | "mib" | "gib" | "tib"
        )
}

/// Why the settings could not be read.
#[derive(Debug, thiserror::Error)]
#[error("settings: {0}")]
pub struct SettingsError(#[from] config::ConfigError);

/// An unknown key says where it was written: serde's message names the
/// key only, and the file's line is lost once the sources are merged.
fn locate_unknown_key(error: config::ConfigError, file: Option<&Path>) -> SettingsError {
    let message = error.to_string();
    let Some(key) = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(key, _)| key)
    else {
        return SettingsError(error);
    };
    let path = file.unwrap_or(Path::new("lucca-sync.toml"));
    let in_file = std::fs::read_to_string(path).ok().and_then(|text| {
        text.lines().enumerate().find_map(|(n, line)| {
            let column = line.len() - line.trim_start().len();
            let rest = line.trim_start().strip_prefix(key)?;
            rest.trim_start()
                .starts_with('=')
                .then(|| format!("{}:{}:{}", path.display(), n + 1, column + 1))
        })
    });
    // `LUCCA_SYNC_*` variables only carry known keys (`settings_env`).
    let at = in_file.unwrap_or_else(|| path.display().to_string());
    SettingsError(config::ConfigError::Message(format!("{at}: {message}")))
}

impl Settings {
    /// Defaults, then `lucca-sync.toml` (or the given file) if it exists,
    /// then `LUCCA_SYNC_*` variables (e.g. `LUCCA_SYNC_LOG_FORMAT=json`).
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        let mut builder = config::Config::builder();
        for (key, value) in DEFAULTS {
            builder = builder.set_default(*key, *value)?;
        }
        builder = match file {
            Some(path) => builder.add_source(config::File::from(path).required(true)),
            None => builder.add_source(config::File::with_name("lucca-sync").required(false)),
        };
        let settings = builder
            .add_source(
                config::Environment::with_prefix("LUCCA_SYNC")
                    .try_parsing(true)
                    .source(Some(settings_env(std::env::vars()))),
            )
            .build()?
            .try_deserialize::<Settings>()
            .map_err(|e| locate_unknown_key(e, file))?;
        if !is_memory_size(&settings.duckdb_memory_limit) {
            return Err(SettingsError(config::ConfigError::Message(format!(
                "duckdb_memory_limit `{}` is not a size: write e.g. `32MB`, `1GiB` or `50%`",
                settings.duckdb_memory_limit
            ))));
        }
        Ok(settings)
    }

    /// Timeouts for a source: the pipeline's own values win.
    pub fn timeouts(&self, source: &SourceSpec) -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(
                source
                    .connect_timeout_secs
                    .unwrap_or(self.connect_timeout_secs),
            ),
            request: Duration::from_secs(
                source
                    .request_timeout_secs
                    .unwrap_or(self.request_timeout_secs),
            ),
        }
    }

    /// Retry limits for a source: the pipeline's own values win.
    pub fn retry(&self, source: &SourceSpec) -> RetrySettings {
        RetrySettings {
            max_attempts: source.max_attempts.unwrap_or(self.max_attempts).max(1),
            max_total_wait: Duration::from_secs(
                source
                    .max_retry_wait_secs
                    .unwrap_or(self.max_retry_wait_secs),
            ),
            max_retry_after: Duration::from_secs(
                source
                    .max_retry_after_secs
                    .unwrap_or(self.max_retry_after_secs),
            ),
            backoff_min: Duration::from_millis(self.retry_backoff_min_ms),
            backoff_max: Duration::from_millis(self.retry_backoff_max_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Settings, is_memory_size, settings_env};

    #[test]
    fn an_unknown_key_is_located_in_the_settings_file() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("lucca-sync.toml");
        std::fs::write(&path, "log_format = \"json\"\n  log_formt = \"text\"\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let error = Settings::load(Some(&path)).err().map(|e| e.to_string());
        let expected = format!(
            "settings: {}:2:3: unknown field `log_formt`, expected one of",
            path.display()
        );
        assert!(
            error.as_deref().is_some_and(|e| e.starts_with(&expected)),
            "{error:?}"
        );
    }

    #[test]
    fn memory_limits_are_sizes_duckdb_takes() {
        for ok in ["32MB", "1 GiB", "1.5gb", "80%", "512kib", "2TB", "1000000"] {
            assert!(is_memory_size(ok), "{ok}");
        }
        for bad in ["lots", "garbage", "32 MBs", "", "-1GB", "%", "0MB"] {
            assert!(!is_memory_size(bad), "{bad}");
        }
    }

    #[test]
    fn only_variables_naming_a_setting_are_read() {
        let vars = [
            ("LUCCA_SYNC_LOG_FORMAT", "json"),
            ("LUCCA_SYNC_LOG", "debug"),
            ("LUCCA_SYNC_REQUIRE_READERS", "1"),
            ("LUCCA_API_KEY", "k"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let kept = settings_env(vars.into_iter());
        assert_eq!(kept.len(), 1);
        assert_eq!(
            kept.get("LUCCA_SYNC_LOG_FORMAT").map(String::as_str),
            Some("json")
        );
    }
}
