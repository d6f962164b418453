//! keepalived statements to lb.toml: what maps, how, and what is reported.
//!
//! Defaults are keepalived's where lbctl's differ, so that the result
//! behaves as the input did: VRRP version 2, checks every 60 s (`delay_loop`)
//! with a 5 s connect timeout, a real server down after its first try and
//! `retry` retries fail (retry 1 by default; 0 for MISC_CHECK), up after one
//! success, weight 1, and no check at all for a real server without a
//! checker.

use std::net::IpAddr;

use super::emit::TomlOut;
use super::read::read;
use super::syntax::{self, Includes, Stmt, Word};
use super::write::write;
use super::{Conversion, ImportError, Loc, Note, NoteLine, Options, Severity, SourceFiles};

/// Converts keepalived.conf `text` (named `name`; `include`s read through
/// `includes`) to lb.toml text.
///
/// # Errors
/// [`ImportError::Syntax`] for text keepalived would not read, and
/// [`ImportError::Untranslatable`] when some of it cannot be expressed in
/// lb.toml without changing where traffic goes.
pub fn convert(
    name: &str,
    text: &str,
    includes: &dyn Includes,
    opts: &Options,
) -> Result<Conversion, ImportError> {
    let mut files = SourceFiles::default();
    let stmts = match syntax::parse(name, text, &mut files, includes) {
        Ok(s) => s,
        Err(e) => return Err(ImportError::Syntax(e, files)),
    };
    let mut cx = Cx::default();
    let input = read(&stmts, &mut cx);
    let toml = write(&input, opts, &mut cx, &files);
    let mut notes = cx.notes;
    // Errors first; otherwise in the order found (stable).
    notes.sort_by_key(|n| std::cmp::Reverse(n.severity));
    if notes.iter().any(|n| n.severity == Severity::Error) {
        return Err(ImportError::Untranslatable(notes, files));
    }
    let mut head = TomlOut::default();
    head.comment(&format!(
        "lb.toml converted from {} by lbctl import-keepalived.\n\
         Each table names the keepalived statement it comes from. Check what\n\
         follows, then run: lbctl check --config THIS_FILE",
        files.name(0)
    ));
    if !notes.is_empty() {
        head.comment("\nNot translated, or translated differently:");
        for n in &notes {
            head.comment(&format!("  {}", NoteLine(n, &files)));
        }
    }
    Ok(Conversion {
        toml: head.finish() + &toml,
        notes,
        files,
    })
}

/// The notes of one conversion, and the readers of keepalived values that
/// add to them.
#[derive(Default)]
pub(super) struct Cx {
    notes: Vec<Note>,
    /// What [`Cx::warn_once`] has said, and about what.
    said: std::collections::HashSet<(&'static str, Loc)>,
}

impl Cx {
    /// A warning `topic` about the statement at `about` (a virtual server,
    /// say) given once, at `loc`, however many times it applies.
    pub(super) fn warn_once(
        &mut self,
        topic: &'static str,
        about: Loc,
        loc: Loc,
        message: impl Into<String>,
    ) {
        if self.said.insert((topic, about)) {
            self.warn(loc, message);
        }
    }

    pub(super) fn warn(&mut self, loc: Loc, message: impl Into<String>) {
        self.notes.push(Note {
            severity: Severity::Warning,
            loc,
            message: message.into(),
        });
    }

    pub(super) fn error(&mut self, loc: Loc, message: impl Into<String>) {
        self.notes.push(Note {
            severity: Severity::Error,
            loc,
            message: message.into(),
        });
    }

    pub(super) fn unsupported(&mut self, s: &Stmt, why: &str) {
        self.warn(s.loc(), format!("{} not translated: {why}", s.keyword()));
    }

    /// The single argument of `s`.
    pub(super) fn one<'a>(&mut self, s: &'a Stmt) -> Option<&'a Word> {
        if let [w] = s.args() {
            Some(w)
        } else {
            self.error(
                s.loc(),
                format!("{} takes one value, found {}", s.keyword(), s.args().len()),
            );
            None
        }
    }

    pub(super) fn int(&mut self, w: &Word, what: &str) -> Option<i64> {
        match w.text.parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => {
                self.error(w.loc, format!("{what} \"{}\": expected an integer", w.text));
                None
            }
        }
    }

    pub(super) fn one_int(&mut self, s: &Stmt) -> Option<i64> {
        let w = self.one(s)?;
        self.int(w, s.keyword())
    }

    /// `timeout` if it is shorter than `interval`, as lbctl requires; else
    /// 9/10 of the interval, with a warning at `loc`.
    pub(super) fn fit_timeout(&mut self, loc: Loc, what: &str, timeout: u64, interval: u64) -> u64 {
        if timeout > 0 && timeout < interval {
            return timeout;
        }
        let fitted = (interval * 9 / 10).max(1);
        self.warn(
            loc,
            format!(
                "{what}: timeout {} is not shorter than the interval {}, as lbctl requires: using {}",
                fmt_ms(timeout),
                fmt_ms(interval),
                fmt_ms(fitted)
            ),
        );
        fitted
    }

    /// keepalived seconds (`1`, `0.5`) in milliseconds.
    pub(super) fn secs(&mut self, w: &Word, what: &str) -> Option<u64> {
        match seconds_to_ms(&w.text) {
            Some(d) => Some(d),
            None => {
                self.error(
                    w.loc,
                    format!(
                        "{what} \"{}\": expected seconds, like 1 or 0.5 (to the millisecond)",
                        w.text
                    ),
                );
                None
            }
        }
    }

    pub(super) fn one_secs(&mut self, s: &Stmt) -> Option<u64> {
        let w = self.one(s)?;
        self.secs(w, s.keyword())
    }

    pub(super) fn addr(&mut self, w: &Word, what: &str) -> Option<IpAddr> {
        match w.text.parse::<IpAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.error(
                    w.loc,
                    format!("{what} \"{}\": expected an IP address", w.text),
                );
                None
            }
        }
    }

    pub(super) fn port(&mut self, w: &Word, what: &str) -> Option<u16> {
        match w.text.parse::<u16>() {
            Ok(p) => Some(p),
            Err(_) => {
                self.error(
                    w.loc,
                    format!("{what} \"{}\": expected a port from 0 to 65535", w.text),
                );
                None
            }
        }
    }

    /// A program and its arguments, split as keepalived splits them (no shell).
    pub(super) fn argv(&mut self, w: &Word, what: &str) -> Option<Vec<String>> {
        match shlex::split(&w.text) {
            Some(v) if !v.is_empty() => Some(v),
            _ => {
                self.error(
                    w.loc,
                    format!(
                        "{what} \"{}\": expected a program and its arguments (with balanced quotes)",
                        w.text
                    ),
                );
                None
            }
        }
    }
}

/// keepalived seconds (`1`, `0.25`) in milliseconds; `None` for anything
/// else (negative, not a number, finer than a millisecond but not zero).
fn seconds_to_ms(text: &str) -> Option<u64> {
    let x: f64 = text.parse().ok()?;
    if !x.is_finite() || !(0.0..=1e9).contains(&x) {
        return None;
    }
    let ms = (x * 1000.0).round();
    if ms == 0.0 && x > 0.0 {
        return None;
    }
    // In range: at most 1e12, exactly representable.
    Some(ms as u64)
}

/// Milliseconds as an lb.toml duration: `"1s"`, `"250ms"`.
pub(super) fn fmt_ms(ms: u64) -> String {
    crate::config::fmt_duration(std::time::Duration::from_millis(ms))
}

#[cfg(test)]
mod tests;
