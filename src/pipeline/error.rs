//! Located pipeline errors (`file:line:col: message`) and the `Secret` type
//! that keeps the API key out of every log, `Debug` output and message.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem of a pipeline file, located in it.
///
/// Displays as `{file}:{line}:{column}: {message}`, or `{file}: {message}`
/// when the problem concerns the whole file (`line` is then 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineError {
    /// The pipeline file.
    pub file: PathBuf,
    /// 1-based line; 0 when the error is about the whole file.
    pub line: usize,
    /// 1-based column, in characters; 0 when `line` is 0.
    pub column: usize,
    /// What is wrong. Never contains the value of an environment variable or
    /// the API key.
    pub message: String,
}

impl PipelineError {
    /// An error at a 1-based `line` and `column` of `file` (0, 0: the whole
    /// file).
    pub fn new(file: &Path, line: usize, column: usize, message: impl Into<String>) -> Self {
        PipelineError {
            file: file.to_path_buf(),
            line,
            column,
            message: message.into(),
        }
    }

    /// An error about the whole file (e.g. it cannot be read).
    pub fn whole_file(file: &Path, message: impl Into<String>) -> Self {
        PipelineError {
            file: file.to_path_buf(),
            line: 0,
            column: 0,
            message: message.into(),
        }
    }
}

impl fmt::Display for PipelineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            )
        }
    }
}

impl std::error::Error for PipelineError {}

/// Every problem found in a pipeline file, in file order. Displays one error
/// per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineErrors(pub Vec<PipelineError>);

impl fmt::Display for PipelineErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PipelineErrors {}

impl From<PipelineError> for PipelineErrors {
    fn from(error: PipelineError) -> Self {
        PipelineErrors(vec![error])
    }
}

/// A secret (the Lucca API key). `Debug` and `Display` print `<redacted>`;
/// only [`Secret::expose`] gives the value, to build the request header.
#[derive(Clone, serde::Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
#[schemars(transparent)]
pub struct Secret(String);

impl Secret {
    /// The value, for `${VAR}` expansion.
    pub(crate) fn expose_mut(&mut self) -> &mut String {
        &mut self.0
    }

    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_formats() {
        let located = PipelineError {
            file: PathBuf::from("pipelines/users.yaml"),
            line: 12,
            column: 16,
            message: "bad".to_owned(),
        };
        assert_eq!(located.to_string(), "pipelines/users.yaml:12:16: bad");
        let whole = PipelineError::whole_file(Path::new("x.yaml"), "cannot read");
        assert_eq!(whole.to_string(), "x.yaml: cannot read");
        assert_eq!(
            PipelineErrors(vec![located, whole]).to_string(),
            "pipelines/users.yaml:12:16: bad\nx.yaml: cannot read"
        );
    }

    #[test]
    fn secrets_are_redacted() {
        let secret = Secret::new("s3cr3t");
        assert_eq!(format!("{secret}"), "<redacted>");
        assert_eq!(format!("{secret:?}"), "<redacted>");
        assert_eq!(format!("{:?}", Some(secret.clone())), "Some(<redacted>)");
        assert_eq!(secret.expose(), "s3cr3t");
    }
}
