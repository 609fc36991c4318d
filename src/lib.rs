//! lucca-sync copies HR data out of Lucca into DuckDB tables and Parquet
//! files. The binary is a thin CLI over this library: pipeline files are
//! parsed by [`pipeline`], read by [`extract`], typed by [`transform`] and
//! written by [`load`]; [`run`] wires the stages together.

// Errors carry the pipeline, stream, URL, page, field and value they are
// about; they are built once per failed stream, never on a hot path, so
// their size does not matter.
#![allow(clippy::result_large_err)]

pub mod catalog;
pub mod extract;
pub mod json;
pub mod load;
pub mod pipeline;
pub mod progress;
pub mod report;
pub mod run;
pub mod sandbox;
pub mod settings;
pub mod transform;
