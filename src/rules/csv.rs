//! The one CSV reader (RFC 4180, on the `csv` crate) for the comma-separated files blocklab
//! reads: Citizen Lab test lists (`url,category_code,...`, the `ooni-csv` import and the probe's
//! `--input`), OONI's blockpage fingerprints and the experiment's ground-truth labels.
//!
//! Quoted fields, doubled quotes, commas and newlines inside quotes, a UTF-8 byte-order mark,
//! CRLF line ends and blank lines are handled here once; every record keeps the 1-based line and
//! byte offset it starts at, so callers report `path:line:column: reason` through
//! [`Diagnostic`]. The reader is pure: it parses text it is given and does no I/O. The RKN
//! registry importer keeps its own reader (windows-1251, `;`-separated, unquoted fields that may
//! themselves hold `;`).

use super::{Diagnostic, RulesError};

/// One record with where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// 1-based line where the record starts.
    pub line: usize,
    /// Byte offset in the text where the record starts (for [`Diagnostic::at`]).
    pub offset: usize,
    /// The fields, unquoted.
    pub fields: Vec<String>,
}

impl Record {
    /// Field `i`, or `""` when the record is shorter.
    pub fn get(&self, i: usize) -> &str {
        self.fields.get(i).map_or("", String::as_str)
    }
}

/// A read CSV text: the header (when asked for) and the records after it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    /// The header's column names (empty without a header).
    pub header: Vec<String>,
    /// The records, in file order (comment and blank lines skipped).
    pub records: Vec<Record>,
}

impl Table {
    /// The index of the header column `name`.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.header.iter().position(|h| h == name)
    }
}

/// How to read a CSV text: comma-separated, any number of fields per record.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reader {
    header: bool,
    comment: Option<u8>,
    trim: bool,
}

impl Reader {
    /// A reader without header, comments or trimming.
    pub fn new() -> Reader {
        Reader::default()
    }

    /// The first record is the header.
    pub fn header(mut self) -> Reader {
        self.header = true;
        self
    }

    /// Lines starting with `c` are comments.
    pub fn comment(mut self, c: u8) -> Reader {
        self.comment = Some(c);
        self
    }

    /// Surrounding whitespace is trimmed from every field.
    pub fn trim(mut self) -> Reader {
        self.trim = true;
        self
    }

    /// Reads all of `text`; `path` names it in errors (`path:line:column: reason`).
    pub fn read(&self, path: &str, text: &str) -> Result<Table, RulesError> {
        self.parse(text)
            .map_err(|e| RulesError::single(Diagnostic::at(path, text, e.offset, e.message)))
    }

    /// Reads all of `text`; an error says at which byte offset the text went wrong.
    pub fn parse(&self, text: &str) -> Result<Table, CsvError> {
        let bom = if text.starts_with('\u{feff}') { 3 } else { 0 };
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .comment(self.comment)
            .trim(if self.trim {
                csv::Trim::All
            } else {
                csv::Trim::None
            })
            .from_reader(&text.as_bytes()[bom..]);
        let mut table = Table::default();
        let mut lines = Lines::new(text);
        let mut last_start = None;
        for rec in rdr.records() {
            let rec = rec.map_err(|e| CsvError {
                offset: e.position().map_or(0, |p| p.byte() as usize) + bom,
                message: e.to_string(),
            })?;
            // The crate's position is where the previous record ended: step over the blank
            // and comment lines between.
            let offset =
                self.record_start(text, rec.position().map_or(0, |p| p.byte() as usize) + bom);
            last_start = Some(offset);
            let record = Record {
                line: lines.line_at(offset),
                offset,
                fields: rec.iter().map(str::to_string).collect(),
            };
            if self.header && table.header.is_empty() && table.records.is_empty() {
                table.header = record.fields;
            } else {
                table.records.push(record);
            }
        }
        // The `csv` crate takes an unterminated quoted field to the end of the text; say so.
        if let Some(start) = last_start {
            if quote_left_open(&text[start..]) {
                return Err(CsvError {
                    offset: start,
                    message: "unterminated quoted field (a `\"` is never closed)".into(),
                });
            }
        }
        Ok(table)
    }
}

impl Reader {
    fn record_start(&self, text: &str, mut at: usize) -> usize {
        let b = text.as_bytes();
        while at < b.len() {
            match b[at] {
                b'\r' | b'\n' => at += 1,
                c if Some(c) == self.comment => {
                    at = text[at..].find('\n').map_or(b.len(), |i| at + i + 1);
                }
                _ => break,
            }
        }
        at
    }
}

/// Why a CSV text could not be read, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvError {
    /// Byte offset in the text (the start of the bad record).
    pub offset: usize,
    /// What is wrong.
    pub message: String,
}

/// Line numbers of increasing byte offsets, counted once over the text.
struct Lines<'a> {
    text: &'a [u8],
    at: usize,
    line: usize,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Lines<'a> {
        Lines {
            text: text.as_bytes(),
            at: 0,
            line: 1,
        }
    }

    fn line_at(&mut self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        if end > self.at {
            self.line += self.text[self.at..end]
                .iter()
                .filter(|b| **b == b'\n')
                .count();
            self.at = end;
        }
        self.line
    }
}

/// Whether the record text `raw` (from its start to the end of the text) leaves a quoted field
/// open: a field that starts with `"` and is never closed.
fn quote_left_open(raw: &str) -> bool {
    let mut in_quotes = false;
    let mut field_start = true;
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if in_quotes {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                } else {
                    in_quotes = false;
                }
            }
            continue;
        }
        match c {
            '"' if field_start => in_quotes = true,
            ',' | '\n' => {
                field_start = true;
                continue;
            }
            ' ' | '\t' | '\r' if field_start => continue,
            _ => {}
        }
        field_start = false;
    }
    in_quotes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_commas_newlines_and_lines() {
        let t = Reader::new()
            .header()
            .read(
                "t.csv",
                "a,b,c\n1,\"x, \"\"y\"\"\",3\r\n\n\"multi\nline\",,z\n4,5\n",
            )
            .unwrap();
        assert_eq!(t.header, ["a", "b", "c"]);
        assert_eq!(t.column("c"), Some(2));
        assert_eq!(t.records.len(), 3);
        assert_eq!(t.records[0].fields, ["1", "x, \"y\"", "3"]);
        assert_eq!(t.records[0].line, 2);
        assert_eq!(t.records[1].fields, ["multi\nline", "", "z"]);
        assert_eq!(t.records[1].line, 4);
        assert_eq!(t.records[2].line, 6, "after a field holding a newline");
        assert_eq!((t.records[2].get(1), t.records[2].get(2)), ("5", ""));
    }

    #[test]
    fn comments_trim_and_bom() {
        let t = Reader::new()
            .comment(b'#')
            .trim()
            .read("l.csv", "\u{feff}a , b\n# note, here\n c,d \n")
            .unwrap();
        assert_eq!(t.records.len(), 2);
        assert_eq!(t.records[0].fields, ["a", "b"]);
        assert_eq!((t.records[1].line, t.records[1].get(0)), (3, "c"));
        assert_eq!(t.records[1].offset, "\u{feff}a , b\n# note, here\n".len());
    }

    #[test]
    fn unterminated_quote_is_an_error_with_its_line() {
        let e = Reader::new()
            .read("x.csv", "a\n\"open,1\nmore\n")
            .unwrap_err();
        assert_eq!(e.diagnostics[0].line, 2, "{e}");
        assert!(e.to_string().starts_with("x.csv:2:1: unterminated"), "{e}");
        // A closed quote at the end is fine, and so is a quote inside an unquoted field.
        assert!(Reader::new().read("y.csv", "a,\"b\"\nc\"d,e\n").is_ok());
    }
}
