//! A minimal RFC 4180 CSV reader for the data files the probe reads (OONI fingerprints,
//! Citizen Lab test lists): quoted fields, doubled quotes, commas and newlines inside quotes.
//!
//! Records are returned as vectors of owned fields; the first record of a file is its header.

/// One parsed record with the 1-based line it started on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Line number (1-based) where the record starts.
    pub line: usize,
    /// The fields, unquoted.
    pub fields: Vec<String>,
}

/// Why a CSV text could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsvError {
    /// A quoted field was still open at the end of the text.
    #[error("line {0}: unterminated quoted field")]
    Unterminated(usize),
}

/// Parses the whole text into records (empty lines are skipped).
pub fn parse(text: &str) -> Result<Vec<Record>, CsvError> {
    let mut out = Vec::new();
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut in_quotes = false;
    let mut line = 1usize;
    let mut start_line = 1usize;
    let mut chars = text.chars().peekable();
    let mut record_has_content = false;
    while let Some(c) = chars.next() {
        if in_quotes {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => in_quotes = false,
                '\n' => {
                    line += 1;
                    field.push('\n');
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' => {
                in_quotes = true;
                record_has_content = true;
            }
            ',' => {
                fields.push(std::mem::take(&mut field));
                record_has_content = true;
            }
            '\r' => {}
            '\n' => {
                if record_has_content || !field.is_empty() {
                    fields.push(std::mem::take(&mut field));
                    out.push(Record {
                        line: start_line,
                        fields: std::mem::take(&mut fields),
                    });
                }
                record_has_content = false;
                line += 1;
                start_line = line;
            }
            _ => {
                field.push(c);
                record_has_content = true;
            }
        }
    }
    if in_quotes {
        return Err(CsvError::Unterminated(start_line));
    }
    if record_has_content || !field.is_empty() {
        fields.push(field);
        out.push(Record {
            line: start_line,
            fields,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_commas_and_newlines() {
        let recs = parse("a,b,c\n1,\"x, \"\"y\"\"\",3\r\n\n\"multi\nline\",,z").unwrap();
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[1].fields, vec!["1", "x, \"y\"", "3"]);
        assert_eq!(recs[1].line, 2);
        assert_eq!(recs[2].fields, vec!["multi\nline", "", "z"]);
        assert_eq!(recs[2].line, 4);
    }

    #[test]
    fn unterminated_quote_is_an_error() {
        assert_eq!(parse("a\n\"open,1\n"), Err(CsvError::Unterminated(2)));
    }
}
