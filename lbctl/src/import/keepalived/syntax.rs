//! keepalived.conf syntax: whitespace-separated words, `"quoted strings"`,
//! `{ }` blocks, comments from an unquoted `#` or `!` to the end of the line
//! (`\#` and `\!` are the characters themselves), and `include PATTERN`
//! (the rest of the line, braces and all; resolved by the caller's
//! [`Includes`]). keepalived's per-node `@ID` lines, `$VARIABLES` and
//! `~SEQ` lines are refused: what they expand to depends on the node.
//!
//! A statement is the words of one line; a `{` opens a block that belongs to
//! the statement before it (on the same line, or the previous one), and the
//! block ends at its matching `}`. This is how keepalived reads its file.

use super::{Loc, SourceFiles};

/// One word of a statement, unquoted, with where it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Word {
    /// The text (quotes removed).
    pub text: String,
    /// Where the word starts.
    pub loc: Loc,
}

/// One statement: a keyword, its arguments and its block, if it has one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stmt {
    /// The keyword and its arguments; never empty.
    pub words: Vec<Word>,
    /// The statements of its `{ }` block.
    pub block: Option<Vec<Stmt>>,
}

impl Stmt {
    /// The keyword (first word).
    pub fn keyword(&self) -> &str {
        &self.words[0].text
    }

    /// Where the keyword is.
    pub fn loc(&self) -> Loc {
        self.words[0].loc
    }

    /// The arguments (the words after the keyword).
    pub fn args(&self) -> &[Word] {
        &self.words[1..]
    }

    /// The block's statements (none when it has no block).
    pub fn children(&self) -> &[Stmt] {
        self.block.as_deref().unwrap_or(&[])
    }
}

/// A syntax error, with where it is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SyntaxError {
    /// Where.
    pub loc: Loc,
    /// What is wrong and what was expected.
    pub message: String,
}

/// Finds the files an `include` names (keepalived expands shell globs).
pub trait Includes {
    /// The files matching `pattern`, named as `include` named them relative
    /// to `from` (the including file's name), with their text; sorted.
    ///
    /// # Errors
    /// A message when the pattern or a matching file cannot be read.
    fn resolve(&self, pattern: &str, from: &str) -> Result<Vec<(String, String)>, String>;
}

/// How deep `include` may nest (a guard against an include loop).
const MAX_INCLUDE_DEPTH: usize = 8;

#[derive(Debug)]
enum Token {
    Word(Word),
    Open(Loc),
    Close(Loc),
    LineEnd,
}

/// Splits `text` (file `file`) into tokens.
fn lex(text: &str, file: usize) -> Result<Vec<Token>, SyntaxError> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line_no = u32::try_from(n + 1).unwrap_or(u32::MAX);
        let loc_at = |byte: usize| Loc {
            file,
            line: line_no,
            column: u32::try_from(line[..byte].chars().count() + 1).unwrap_or(u32::MAX),
        };
        let err = |byte: usize, message: &str| SyntaxError {
            loc: loc_at(byte),
            message: message.to_owned(),
        };
        let first = line.len() - line.trim_start().len();
        let rest = &line[first..];
        if rest.starts_with('@') {
            return Err(err(
                first,
                "keepalived's per-node @ID lines are not supported: convert each node's \
                 config from a copy without them (keep that node's lines, drop the @ID)",
            ));
        }
        if rest.starts_with("~SEQ") {
            return Err(err(
                first,
                "keepalived's ~SEQ lines are not supported: write the lines out",
            ));
        }
        // `include` takes the rest of the line: a glob may hold braces.
        if let Some(pattern) = rest.strip_prefix("include")
            && pattern.starts_with(char::is_whitespace)
        {
            let body = comment_free(pattern).trim();
            let at = first + "include".len() + (pattern.len() - pattern.trim_start().len());
            out.push(Token::Word(Word {
                text: "include".into(),
                loc: loc_at(first),
            }));
            if !body.is_empty() {
                out.push(Token::Word(Word {
                    text: body.to_owned(),
                    loc: loc_at(at),
                }));
            }
            out.push(Token::LineEnd);
            continue;
        }
        let line_start = out.len();
        let mut chars = line.char_indices().peekable();
        while let Some(&(i, c)) = chars.peek() {
            match c {
                '#' | '!' => break,
                '{' => {
                    out.push(Token::Open(loc_at(i)));
                    chars.next();
                }
                '}' => {
                    out.push(Token::Close(loc_at(i)));
                    chars.next();
                }
                c if c.is_whitespace() => {
                    chars.next();
                }
                '"' => {
                    chars.next();
                    let mut text = String::new();
                    let mut closed = false;
                    for (_, c) in chars.by_ref() {
                        if c == '"' {
                            closed = true;
                            break;
                        }
                        text.push(c);
                    }
                    if !closed {
                        return Err(err(
                            i,
                            "unterminated quoted string: expected a closing \" on the same line",
                        ));
                    }
                    out.push(Token::Word(Word {
                        text,
                        loc: loc_at(i),
                    }));
                }
                _ => {
                    let mut text = String::new();
                    while let Some(&(_, c)) = chars.peek() {
                        if c.is_whitespace() || matches!(c, '{' | '}' | '#' | '!' | '"') {
                            break;
                        }
                        chars.next();
                        if c == '\\'
                            && let Some(&(_, e @ ('#' | '!'))) = chars.peek()
                        {
                            text.push(e);
                            chars.next();
                            continue;
                        }
                        text.push(c);
                    }
                    out.push(Token::Word(Word {
                        text,
                        loc: loc_at(i),
                    }));
                }
            }
        }
        if let Some(w) = out[line_start..].iter().find_map(|t| match t {
            Token::Word(w) if w.text.contains('$') => Some(w),
            _ => None,
        }) {
            return Err(SyntaxError {
                loc: w.loc,
                message: "keepalived's $VARIABLES are not supported: expand them first".into(),
            });
        }
        out.push(Token::LineEnd);
    }
    Ok(out)
}

/// `text` up to its first unescaped `#` or `!`.
fn comment_free(text: &str) -> &str {
    let mut prev = ' ';
    for (i, c) in text.char_indices() {
        if matches!(c, '#' | '!') && prev != '\\' {
            return &text[..i];
        }
        prev = c;
    }
    text
}

/// Parses file `name` with `text` into statements, reading what it includes
/// through `includes`; every file read is added to `files`.
///
/// # Errors
/// The first syntax error: an unterminated string, an unmatched brace, an
/// include that cannot be read or nests too deep.
pub fn parse(
    name: &str,
    text: &str,
    files: &mut SourceFiles,
    includes: &dyn Includes,
) -> Result<Vec<Stmt>, SyntaxError> {
    parse_file(name, text, files, includes, 0)
}

fn parse_file(
    name: &str,
    text: &str,
    files: &mut SourceFiles,
    includes: &dyn Includes,
    depth: usize,
) -> Result<Vec<Stmt>, SyntaxError> {
    let file = files.add(name);
    let tokens = lex(text, file)?;
    let mut levels = Levels::default();
    let mut cur: Vec<Word> = Vec::new();
    for tok in tokens {
        match tok {
            Token::Word(w) => cur.push(w),
            Token::LineEnd => {
                flush(&mut cur, &mut levels, files, includes, depth)?;
            }
            Token::Open(loc) => {
                if cur.is_empty() {
                    // `{` on a line of its own opens the previous statement's block.
                    match levels.current().pop() {
                        Some(prev) if prev.block.is_none() => cur = prev.words,
                        _ => {
                            return Err(SyntaxError {
                                loc,
                                message: "a { without a keyword before it".into(),
                            });
                        }
                    }
                }
                levels.open(std::mem::take(&mut cur), loc);
            }
            Token::Close(loc) => {
                flush(&mut cur, &mut levels, files, includes, depth)?;
                if !levels.close() {
                    return Err(SyntaxError {
                        loc,
                        message: "a } that closes no block".into(),
                    });
                }
            }
        }
    }
    flush(&mut cur, &mut levels, files, includes, depth)?;
    levels.finish().map_err(|loc| SyntaxError {
        loc,
        message: "this { is never closed: expected a matching }".into(),
    })
}

/// The statements read so far: the file's own, and, for each block still
/// open, the statement that opened it (its block filling) and where.
#[derive(Default)]
struct Levels {
    top: Vec<Stmt>,
    open: Vec<(Stmt, Loc)>,
}

impl Levels {
    /// The list new statements go to: the innermost open block's.
    fn current(&mut self) -> &mut Vec<Stmt> {
        match self.open.last_mut() {
            Some((s, _)) => s.block.get_or_insert_with(Vec::new),
            None => &mut self.top,
        }
    }

    /// A statement of `words` whose block starts at `loc`.
    fn open(&mut self, words: Vec<Word>, loc: Loc) {
        let stmt = Stmt {
            words,
            block: Some(Vec::new()),
        };
        self.open.push((stmt, loc));
    }

    /// Closes the innermost block; false when none is open.
    fn close(&mut self) -> bool {
        let Some((stmt, _)) = self.open.pop() else {
            return false;
        };
        self.current().push(stmt);
        true
    }

    /// The file's statements, or where the innermost unclosed `{` is.
    fn finish(self) -> Result<Vec<Stmt>, Loc> {
        match self.open.last() {
            Some((_, loc)) => Err(*loc),
            None => Ok(self.top),
        }
    }
}

/// Ends the statement in `cur` (if any) at the current level; an `include`
/// is replaced by the statements of the files it names.
fn flush(
    cur: &mut Vec<Word>,
    levels: &mut Levels,
    files: &mut SourceFiles,
    includes: &dyn Includes,
    depth: usize,
) -> Result<(), SyntaxError> {
    if cur.is_empty() {
        return Ok(());
    }
    let words = std::mem::take(cur);
    if words[0].text != "include" {
        levels.current().push(Stmt { words, block: None });
        return Ok(());
    }
    let loc = words[0].loc;
    let [_, pattern] = words.as_slice() else {
        return Err(SyntaxError {
            loc,
            message: "include takes one file name or pattern".into(),
        });
    };
    if depth >= MAX_INCLUDE_DEPTH {
        return Err(SyntaxError {
            loc,
            message: format!("includes nest deeper than {MAX_INCLUDE_DEPTH} files"),
        });
    }
    let from = files.name(loc.file).to_owned();
    let found = includes
        .resolve(&pattern.text, &from)
        .map_err(|message| SyntaxError {
            loc: pattern.loc,
            message,
        })?;
    for (name, text) in found {
        let stmts = parse_file(&name, &text, files, includes, depth + 1)?;
        levels.current().extend(stmts);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoIncludes;
    impl Includes for NoIncludes {
        fn resolve(&self, pattern: &str, _: &str) -> Result<Vec<(String, String)>, String> {
            Err(format!("no file matches {pattern}"))
        }
    }

    fn parse_str(text: &str) -> Result<Vec<Stmt>, SyntaxError> {
        parse("k.conf", text, &mut SourceFiles::default(), &NoIncludes)
    }

    fn words(s: &Stmt) -> Vec<&str> {
        s.words.iter().map(|w| w.text.as_str()).collect()
    }

    #[test]
    fn blocks_comments_and_quotes() {
        let t = parse_str(
            "! Configuration File for keepalived\n\
             vrrp_script chk { # a comment\n  script \"/bin/check --quiet\"\n  weight -20 }\n\
             vrrp_instance VI_1\n{\n  virtual_ipaddress {\n 10.0.0.1/24 dev eth0\n }\n}\n",
        )
        .unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(words(&t[0]), ["vrrp_script", "chk"]);
        let c = t[0].children();
        assert_eq!(words(&c[0]), ["script", "/bin/check --quiet"]);
        assert_eq!(words(&c[1]), ["weight", "-20"]);
        assert_eq!(words(&t[1]), ["vrrp_instance", "VI_1"]);
        let vip = &t[1].children()[0];
        assert_eq!(vip.keyword(), "virtual_ipaddress");
        assert_eq!(words(&vip.children()[0]), ["10.0.0.1/24", "dev", "eth0"]);
        assert_eq!(
            vip.children()[0].loc(),
            Loc {
                file: 0,
                line: 8,
                column: 2
            }
        );
    }

    #[test]
    fn one_line_blocks() {
        let t = parse_str("unicast_peer { 10.0.0.2 10.0.0.3 }\nauthentication {auth_type PASS}")
            .unwrap();
        assert_eq!(words(&t[0].children()[0]), ["10.0.0.2", "10.0.0.3"]);
        assert_eq!(words(&t[1].children()[0]), ["auth_type", "PASS"]);
    }

    #[test]
    fn errors_name_the_place() {
        let e = parse_str("a {\n b {\n }\n").unwrap_err();
        assert_eq!((e.loc.line, e.loc.column), (1, 3));
        assert!(e.message.contains("never closed"), "{e:?}");
        let e = parse_str("a\n}\n").unwrap_err();
        assert_eq!((e.loc.line, e.loc.column), (2, 1));
        let e = parse_str("script \"/bin/x\n").unwrap_err();
        assert!(e.message.contains("unterminated"), "{e:?}");
        let e = parse_str("{\n").unwrap_err();
        assert!(e.message.contains("without a keyword"), "{e:?}");
        let e = parse_str("include /etc/x/*.conf\n").unwrap_err();
        assert_eq!((e.loc.line, e.loc.column), (1, 9));
        assert!(e.message.contains("no file matches"), "{e:?}");
    }

    #[test]
    fn node_dependent_lines_are_refused_and_escapes_kept() {
        let e = parse_str("global_defs {\n}\n@lb1 priority 150\n").unwrap_err();
        assert_eq!((e.loc.line, e.loc.column), (3, 1));
        assert!(e.message.contains("@ID"), "{e:?}");
        let e = parse_str("$IF=eth0\n").unwrap_err();
        assert!(e.message.contains("$VARIABLES"), "{e:?}");
        let e = parse_str("a {\n interface $IF\n}\n").unwrap_err();
        assert_eq!((e.loc.line, e.loc.column), (2, 12));
        let e = parse_str("  ~SEQ(i,1,3) x\n").unwrap_err();
        assert_eq!((e.loc.line, e.loc.column), (1, 3));
        // `\#` and `\!` are characters; `#` in quotes too; CRLF lines.
        let t = parse_str("auth_pass a\\#b\\!c # comment\r\nscript \"/x #1\"\r\n").unwrap();
        assert_eq!(words(&t[0]), ["auth_pass", "a#b!c"]);
        assert_eq!(words(&t[1]), ["script", "/x #1"]);
    }

    #[test]
    fn include_takes_the_rest_of_the_line() {
        struct Echo;
        impl Includes for Echo {
            fn resolve(&self, pattern: &str, _: &str) -> Result<Vec<(String, String)>, String> {
                Ok(vec![("x.conf".into(), format!("seen \"{pattern}\"\n"))])
            }
        }
        let t = parse(
            "k.conf",
            "include conf.d/{a,b}.conf # both\n",
            &mut SourceFiles::default(),
            &Echo,
        )
        .unwrap();
        assert_eq!(words(&t[0]), ["seen", "conf.d/{a,b}.conf"]);
    }

    struct Nested;
    impl Includes for Nested {
        fn resolve(&self, pattern: &str, from: &str) -> Result<Vec<(String, String)>, String> {
            match pattern {
                "a.conf" => Ok(vec![(
                    "a.conf".into(),
                    format!("real_server 10.0.0.1 80 {{\n weight 2\n}}\n# from {from}\n"),
                )]),
                "loop.conf" => Ok(vec![("loop.conf".into(), "include loop.conf\n".into())]),
                _ => Ok(vec![]),
            }
        }
    }

    #[test]
    fn includes_are_spliced_with_their_own_file_names() {
        let mut files = SourceFiles::default();
        let t = parse(
            "main.conf",
            "virtual_server 10.0.0.100 80 {\n  include a.conf\n  include none/*.conf\n}\n",
            &mut files,
            &Nested,
        )
        .unwrap();
        let rs = &t[0].children()[0];
        assert_eq!(words(rs), ["real_server", "10.0.0.1", "80"]);
        assert_eq!(files.name(rs.loc().file), "a.conf");
        assert_eq!(rs.loc().line, 1);
        let e = parse(
            "m.conf",
            "include loop.conf\n",
            &mut SourceFiles::default(),
            &Nested,
        )
        .unwrap_err();
        assert!(e.message.contains("nest deeper"), "{e:?}");
    }
}
