//! lb.toml: parsing and validation of the daemon's single configuration file.
//!
//! [`parse`] turns the text into private serde structs (`raw`), then
//! `validate` converts them into the public [`Config`] model with resolved
//! types (addresses, durations, enums, defaults) and checked cross
//! references. Every error is a [`Diagnostic`] `FILE:LINE:COLUMN: message`
//! pointing at the offending key or value; semantic errors are all
//! collected, syntax and type errors stop parsing at the first one.
//!
//! `examples/lb.toml` documents every field.

mod error;
mod model;
mod raw;
mod validate;
mod values;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use error::{ConfigError, Diagnostic, Position};
pub use model::*;
/// How lb.toml writes a duration (`"2s"`, `"250ms"`).
pub(crate) use values::fmt_duration;

/// Reads and validates the configuration file at `path`. Diagnostics name
/// the file as `path` was given.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, &path.display().to_string())
}

/// Parses and validates configuration `text`; `file_name` is used in diagnostics.
pub fn parse(text: &str, file_name: &str) -> Result<Config, ConfigError> {
    let raw: raw::RawConfig = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        ConfigError::Invalid(vec![Diagnostic::at(
            file_name,
            text,
            span,
            e.message().trim_end().to_owned(),
        )])
    })?;
    validate::validate(raw, file_name, text).map_err(ConfigError::Invalid)
}
