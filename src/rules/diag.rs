//! Diagnostics for rules and config files: `path:line:column: message`, all of them at once.

use std::fmt;

/// One problem in a file, located by line and column (both 1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file, as the user named it.
    pub path: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl Diagnostic {
    /// A problem at byte offset `offset` of `text`.
    pub fn at(path: &str, text: &str, offset: usize, message: String) -> Diagnostic {
        let (line, column) = line_col(text, offset);
        Diagnostic {
            path: path.to_string(),
            line,
            column,
            message,
        }
    }

    /// A problem with the file as a whole (reported at 1:1).
    pub fn file(path: &str, message: String) -> Diagnostic {
        Diagnostic {
            path: path.to_string(),
            line: 1,
            column: 1,
            message,
        }
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.bytes().filter(|b| *b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.path, self.line, self.column, self.message
        )
    }
}

/// Every problem found in a set of rules files; displayed one per line.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
pub struct RulesError {
    /// The problems, in file order.
    pub diagnostics: Vec<Diagnostic>,
}

impl RulesError {
    /// An error with one problem.
    pub fn single(d: Diagnostic) -> RulesError {
        RulesError {
            diagnostics: vec![d],
        }
    }

    /// Adds a problem.
    pub fn push(&mut self, d: Diagnostic) {
        self.diagnostics.push(d);
    }

    /// Adds all problems of `other`.
    pub fn extend(&mut self, other: RulesError) {
        self.diagnostics.extend(other.diagnostics);
    }

    /// Whether there are no problems.
    pub fn is_empty(&self) -> bool {
        self.diagnostics.is_empty()
    }

    /// The number of problems.
    pub fn len(&self) -> usize {
        self.diagnostics.len()
    }
}

impl fmt::Display for RulesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_columns() {
        let t = "a = 1\nbé = x\n";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 6), (2, 1));
        // `=` after a two-byte character is the 4th character of line 2.
        assert_eq!(line_col(t, t.find("= x").unwrap()), (2, 4));
    }
}
