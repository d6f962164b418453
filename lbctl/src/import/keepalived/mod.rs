//! `lbctl import-keepalived`: turns a keepalived.conf (VRRP instances and
//! scripts, LVS virtual and real servers, their health checkers) into an
//! lb.toml.
//!
//! [`convert`] is pure: text in (and the files `include` names, through
//! [`Includes`]), TOML text and [`Note`]s out. What has no lbctl equivalent
//! is named in a note with its file:line:column; what would change where
//! traffic goes (port mapping, fwmark services, AH authentication...) is an
//! error and nothing is produced. The caller validates the result with
//! [`crate::config::parse`] before writing it.

mod convert;
mod emit;
mod read;
mod syntax;
mod write;

use std::fmt;
use std::net::IpAddr;

pub use convert::convert;
pub use syntax::{Includes, SyntaxError};

/// A place in one of the files read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Loc {
    /// Index into [`SourceFiles`].
    pub file: usize,
    /// Line, from 1.
    pub line: u32,
    /// Column in characters, from 1.
    pub column: u32,
}

/// The names of the files read, in the order they were first read.
#[derive(Clone, Debug, Default)]
pub struct SourceFiles {
    names: Vec<String>,
}

impl SourceFiles {
    fn add(&mut self, name: &str) -> usize {
        self.names.push(name.to_owned());
        self.names.len() - 1
    }

    /// The name of file `i` ("?" if unknown).
    pub fn name(&self, i: usize) -> &str {
        self.names.get(i).map_or("?", String::as_str)
    }

    /// `FILE:LINE:COLUMN` of `loc`.
    pub fn at(&self, loc: Loc) -> String {
        format!("{}:{}:{}", self.name(loc.file), loc.line, loc.column)
    }
}

/// How bad a [`Note`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Left out or changed; the result still does what the input did where
    /// traffic goes (an alerting knob, a timer lbctl does not have...).
    Warning,
    /// Cannot be translated without changing where traffic goes: no output.
    Error,
}

/// Something the conversion left out, changed, or could not do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// Warning or error.
    pub severity: Severity,
    /// Where in the input.
    pub loc: Loc,
    /// What, and what lbctl does instead.
    pub message: String,
}

/// Choices keepalived.conf does not carry.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// `node.interface` (default: the first vrrp_instance's interface).
    pub interface: Option<String>,
    /// Outer source addresses for IPIP (`lb_kind TUN`), at most one per family.
    pub ipip_source: Vec<IpAddr>,
}

/// A finished conversion.
#[derive(Clone, Debug)]
pub struct Conversion {
    /// The lb.toml text.
    pub toml: String,
    /// Warnings (never errors), in input order.
    pub notes: Vec<Note>,
    /// The files read (to print the notes' places).
    pub files: SourceFiles,
}

/// Why there is no conversion.
#[derive(Debug)]
pub enum ImportError {
    /// The input is not valid keepalived.conf syntax.
    Syntax(SyntaxError, SourceFiles),
    /// It is, but some of it cannot be translated (the errors, then the
    /// warnings, in input order).
    Untranslatable(Vec<Note>, SourceFiles),
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImportError::Syntax(e, files) => write!(f, "{}: {}", files.at(e.loc), e.message),
            ImportError::Untranslatable(notes, files) => {
                for (i, n) in notes.iter().enumerate() {
                    if i > 0 {
                        writeln!(f)?;
                    }
                    write!(f, "{}", NoteLine(n, files))?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ImportError {}

/// Displays a note as `FILE:LINE:COLUMN: error|warning: message`.
pub struct NoteLine<'a>(pub &'a Note, pub &'a SourceFiles);

impl fmt::Display for NoteLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.0.severity {
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        write!(f, "{}: {kind}: {}", self.1.at(self.0.loc), self.0.message)
    }
}

/// [`Includes`] from the file system: a relative pattern is taken from the
/// including file's directory; matches are read in sorted order. A pattern
/// that matches nothing is an error (keepalived would go on without it, and
/// the converted config would silently lack what it held).
#[derive(Clone, Copy, Debug, Default)]
pub struct FileIncludes;

impl Includes for FileIncludes {
    fn resolve(&self, pattern: &str, from: &str) -> Result<Vec<(String, String)>, String> {
        let base = std::path::Path::new(from)
            .parent()
            .unwrap_or_else(|| std::path::Path::new(""));
        let full = if std::path::Path::new(pattern).is_absolute() {
            pattern.to_owned()
        } else {
            base.join(pattern).display().to_string()
        };
        let paths = glob::glob(&full).map_err(|e| format!("include \"{pattern}\": {e}"))?;
        let mut found = Vec::new();
        for p in paths {
            let p = p.map_err(|e| format!("include \"{pattern}\": {e}"))?;
            let text = std::fs::read_to_string(&p)
                .map_err(|e| format!("include \"{pattern}\": {}: {e}", p.display()))?;
            found.push((p.display().to_string(), text));
        }
        if found.is_empty() {
            return Err(format!("include \"{pattern}\" ({full}) matches no file"));
        }
        Ok(found)
    }
}
