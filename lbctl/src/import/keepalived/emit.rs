//! A small writer of lb.toml text: tables, keys, inline values, comments.

use std::fmt::Write as _;

/// A TOML value as lb.toml uses them.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Val {
    Str(String),
    Int(i64),
    Bool(bool),
    List(Vec<Val>),
    /// An inline table, keys in this order.
    Table(Vec<(&'static str, Val)>),
}

impl From<&str> for Val {
    fn from(s: &str) -> Self {
        Val::Str(s.to_owned())
    }
}

impl From<String> for Val {
    fn from(s: String) -> Self {
        Val::Str(s)
    }
}

impl From<i64> for Val {
    fn from(n: i64) -> Self {
        Val::Int(n)
    }
}

impl From<bool> for Val {
    fn from(b: bool) -> Self {
        Val::Bool(b)
    }
}

impl Val {
    /// A list of strings.
    pub fn strs(items: &[String]) -> Val {
        Val::List(items.iter().cloned().map(Val::Str).collect())
    }

    fn write(&self, out: &mut String) {
        match self {
            Val::Str(s) => quote(s, out),
            Val::Int(n) => {
                let _ = write!(out, "{n}");
            }
            Val::Bool(b) => {
                let _ = write!(out, "{b}");
            }
            Val::List(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    v.write(out);
                }
                out.push(']');
            }
            Val::Table(kvs) => {
                out.push_str("{ ");
                for (i, (k, v)) in kvs.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(k);
                    out.push_str(" = ");
                    v.write(out);
                }
                out.push_str(" }");
            }
        }
    }
}

/// A TOML basic string.
fn quote(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// lb.toml text being written.
#[derive(Debug, Default)]
pub(super) struct TomlOut {
    text: String,
}

impl TomlOut {
    /// `# line` for each line of `text`.
    pub fn comment(&mut self, text: &str) {
        for line in text.lines() {
            if line.is_empty() {
                self.text.push_str("#\n");
            } else {
                let _ = writeln!(self.text, "# {line}");
            }
        }
    }

    /// `[name]`, after a blank line.
    pub fn table(&mut self, name: &str) {
        let _ = write!(self.text, "\n[{name}]\n");
    }

    /// `[[name]]`, after a blank line.
    pub fn array_table(&mut self, name: &str) {
        let _ = write!(self.text, "\n[[{name}]]\n");
    }

    /// `key = value`.
    pub fn kv(&mut self, key: &str, v: impl Into<Val>) {
        self.text.push_str(key);
        self.text.push_str(" = ");
        v.into().write(&mut self.text);
        self.text.push('\n');
    }

    /// The text.
    pub fn finish(self) -> String {
        self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_valid_toml() {
        let mut t = TomlOut::default();
        t.comment("from k.conf:1:1\n\nsecond");
        t.table("node");
        t.kv("interface", "eth\"0\\\u{1}");
        t.array_table("vip");
        t.kv("port", 80i64);
        t.kv("on", true);
        t.kv(
            "hc",
            Val::Table(vec![
                ("type", "tcp".into()),
                ("ports", Val::List(vec![1i64.into(), 2i64.into()])),
            ]),
        );
        let text = t.finish();
        assert!(
            text.starts_with("# from k.conf:1:1\n#\n# second\n"),
            "{text}"
        );
        let v: toml::Table = toml::from_str(&text).expect(&text);
        assert_eq!(v["node"]["interface"].as_str(), Some("eth\"0\\\u{1}"));
        assert_eq!(v["vip"][0]["port"].as_integer(), Some(80));
        assert_eq!(v["vip"][0]["hc"]["ports"][1].as_integer(), Some(2));
    }
}
