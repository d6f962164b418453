//! Errors of lb.toml loading: positioned diagnostics.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

/// A 1-based line and column (in characters) in the configuration text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// Line, starting at 1.
    pub line: usize,
    /// Column in characters (not bytes), starting at 1.
    pub column: usize,
}

impl Position {
    /// Position of byte offset `offset` in `text` (clamped to the text, and
    /// to a character boundary).
    pub fn from_offset(text: &str, offset: usize) -> Self {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Self { line, column }
    }
}

/// One problem found in the configuration, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// File name as given to [`parse`](super::parse) (the path for [`load`](super::load)).
    pub file: String,
    /// Where the offending key or value starts.
    pub position: Position,
    /// What is wrong and what was expected.
    pub message: String,
}

impl Diagnostic {
    pub(crate) fn at(file: &str, text: &str, span: Range<usize>, message: String) -> Self {
        Self {
            file: file.to_owned(),
            position: Position::from_offset(text, span.start),
            message,
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.position.line, self.position.column, self.message
        )
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read configuration: {source}", path.display())]
    Io {
        /// The path that was given.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a valid configuration: a syntax or type
    /// error (always exactly one diagnostic, as parsing stops there) or one
    /// or more semantic errors (all of them, sorted by position).
    /// Displayed as one `FILE:LINE:COLUMN: message` line per diagnostic.
    #[error("{}", DisplayLines(.0))]
    Invalid(Vec<Diagnostic>),
}

impl ConfigError {
    /// The positioned diagnostics (empty for [`ConfigError::Io`]).
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ConfigError::Io { .. } => &[],
            ConfigError::Invalid(d) => d,
        }
    }
}

struct DisplayLines<'a>(&'a [Diagnostic]);

impl fmt::Display for DisplayLines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}
