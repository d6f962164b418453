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
    /// Warnings (never errors), in the order they were found.
    pub notes: Vec<Note>,
    /// The files read (to print the notes' places).
    pub files: SourceFiles,
}

/// Why there is no conversion.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The input is not valid keepalived.conf syntax.
    #[error("{}: {}", .1.at(.0.loc), .0)]
    Syntax(SyntaxError, SourceFiles),
    /// It is, but some of it cannot be translated (the errors, then the
    /// warnings).
    #[error("{}", NoteLines(.0, .1))]
    Untranslatable(Vec<Note>, SourceFiles),
}

/// Where the converted text's line `line` (from 1) came from: the place
/// named by the comment under the nearest table header above it
/// (`[[vip.backend]]` then `# real_server ... (FILE:L:C)`), so that a
/// validation error in the output can point into the input. Only such
/// comments count: a warning quoted at the top may end in parentheses too.
pub fn source_of(toml: &str, line: usize) -> Option<&str> {
    let lines: Vec<&str> = toml.lines().take(line).collect();
    lines
        .windows(2)
        .rev()
        .filter(|w| w[0].starts_with('[') && w[1].starts_with("# ") && w[1].ends_with(')'))
        .find_map(|w| w[1].rsplit_once('(').map(|(_, at)| &at[..at.len() - 1]))
}

/// Notes, one [`NoteLine`] per line.
struct NoteLines<'a>(&'a [Note], &'a SourceFiles);

impl fmt::Display for NoteLines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, n) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", NoteLine(n, self.1))?;
        }
        Ok(())
    }
}

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

/// [`Includes`] from the file system, as keepalived reads them: a relative
/// pattern is taken from the including file's directory, `{a,b}` braces are
/// expanded, then shell globs; matching regular files are read in sorted
/// order (directories are skipped). A pattern that matches no file is an
/// error: keepalived would go on without it, and the converted config would
/// silently lack what it held.
#[derive(Clone, Copy, Debug, Default)]
pub struct FileIncludes;

impl Includes for FileIncludes {
    fn resolve(&self, pattern: &str, from: &str) -> Result<Vec<(String, String)>, String> {
        let base = std::path::Path::new(from)
            .parent()
            .map(|p| glob::Pattern::escape(&p.display().to_string()))
            .unwrap_or_default();
        let mut found = Vec::new();
        for alt in expand_braces(pattern) {
            let full = if alt.starts_with('/') || base.is_empty() {
                alt
            } else {
                format!("{base}/{alt}")
            };
            let paths = glob::glob(&full).map_err(|e| format!("include \"{pattern}\": {e}"))?;
            for p in paths {
                let p = p.map_err(|e| format!("include \"{pattern}\": {e}"))?;
                if !p.is_file() {
                    continue;
                }
                let text = std::fs::read_to_string(&p)
                    .map_err(|e| format!("include \"{pattern}\": {}: {e}", p.display()))?;
                found.push((p.display().to_string(), text));
            }
        }
        if found.is_empty() {
            return Err(format!("include \"{pattern}\" matches no file"));
        }
        Ok(found)
    }
}

/// `a{b,c}d{e,f}` → `abde`, `abdf`, `acde`, `acdf` (nested braces too); a
/// brace without its match stays as written.
fn expand_braces(p: &str) -> Vec<String> {
    let Some(open) = p.find('{') else {
        return vec![p.to_owned()];
    };
    let mut depth = 0;
    let mut parts = Vec::new();
    let mut start = open + 1;
    for (i, c) in p[open..].char_indices().map(|(i, c)| (i + open, c)) {
        match c {
            '{' => depth += 1,
            ',' if depth == 1 => {
                parts.push(&p[start..i]);
                start = i + 1;
            }
            '}' => {
                depth -= 1;
                if depth == 0 {
                    parts.push(&p[start..i]);
                    let (pre, post) = (&p[..open], &p[i + 1..]);
                    return parts
                        .into_iter()
                        .flat_map(|alt| expand_braces(&format!("{pre}{alt}{post}")))
                        .collect();
                }
            }
            _ => {}
        }
    }
    vec![p.to_owned()]
}

#[cfg(test)]
mod tests {
    use super::{expand_braces, source_of};

    #[test]
    fn output_lines_name_their_source() {
        let t = "# head\n#   k.conf:9:9: warning: x (said once)\n[node]\n\n[[vip]]\n# virtual_server 1 (k.conf:3:1)\nname = 1\n\n[[vip.backend]]\n# real_server 2 (k.conf:5:2)\nweight = 70000\n";
        assert_eq!(source_of(t, 1), None);
        assert_eq!(source_of(t, 3), None);
        assert_eq!(source_of(t, 7), Some("k.conf:3:1"));
        assert_eq!(source_of(t, 11), Some("k.conf:5:2"));
    }

    #[test]
    fn braces_expand_like_keepalived_globs() {
        assert_eq!(expand_braces("a.conf"), ["a.conf"]);
        assert_eq!(
            expand_braces("conf.d/{a,b}.conf"),
            ["conf.d/a.conf", "conf.d/b.conf"]
        );
        assert_eq!(
            expand_braces("{x,y{1,2}}/*.conf"),
            ["x/*.conf", "y1/*.conf", "y2/*.conf"]
        );
        assert_eq!(expand_braces("odd{a,b"), ["odd{a,b"]);
    }
}
