//! The probe's inputs: URLs from the command line and from `--input` files, which are either
//! Citizen Lab test-list CSVs (`url,category_code,...`, <https://github.com/citizenlab/test-lists>)
//! or plain text with one URL per line (`#` comments and blank lines ignored).
//!
//! Every URL must be `http://` or `https://` with a host; all bad lines are reported, with
//! their file and line, not only the first.

use std::path::Path;

use url::Url;

use crate::rules::csv;

/// One URL to measure, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// The URL as given (the OONI `input`).
    pub url: String,
    /// Its Citizen Lab category code, when the input was a test list.
    pub category_code: Option<String>,
}

/// Why inputs could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Lines that are not usable URLs (every one of them).
    #[error("{}", .0.join("\n"))]
    Bad(Vec<String>),
}

/// Checks that `s` is an `http`/`https` URL with a host.
pub fn check_url(s: &str) -> Result<Url, String> {
    let u = Url::parse(s).map_err(|e| format!("`{s}` is not a URL: {e}"))?;
    if u.scheme() != "http" && u.scheme() != "https" {
        return Err(format!(
            "`{s}`: only http:// and https:// URLs can be measured"
        ));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{s}`: no host"));
    }
    Ok(u)
}

/// Parses the text of an input file; `shown` names it in errors.
pub fn parse(shown: &str, text: &str) -> Result<Vec<Input>, InputError> {
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let is_csv = first.trim_start_matches('\u{feff}').starts_with("url,");
    let mut out = Vec::new();
    let mut bad = Vec::new();
    if is_csv {
        let table = csv::Reader::new()
            .header()
            .read(shown, text)
            .map_err(|e| InputError::Bad(e.diagnostics.iter().map(|d| d.to_string()).collect()))?;
        let url_col = table.column("url").unwrap_or(0);
        let cat = table.column("category_code");
        for rec in &table.records {
            let url = rec.get(url_col).trim();
            match check_url(url) {
                Ok(_) => out.push(Input {
                    url: url.to_string(),
                    category_code: cat.and_then(|i| rec.fields.get(i)).cloned(),
                }),
                Err(e) => bad.push(format!("{shown}:{}: {e}", rec.line)),
            }
        }
    } else {
        for (i, line) in text.lines().enumerate() {
            let l = line.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            match check_url(l) {
                Ok(_) => out.push(Input {
                    url: l.to_string(),
                    category_code: None,
                }),
                Err(e) => bad.push(format!("{shown}:{}: {e}", i + 1)),
            }
        }
    }
    if bad.is_empty() {
        Ok(out)
    } else {
        Err(InputError::Bad(bad))
    }
}

/// Reads and parses an input file.
pub fn load(path: &Path) -> Result<Vec<Input>, InputError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| InputError::Read {
        path: shown.clone(),
        source,
    })?;
    parse(&shown, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn citizen_lab_csv() {
        let t = "url,category_code,category_description,date_added,source,notes\n\
                 https://ipvnews.org/,HATE,Hate Speech,2014-04-15,citizenlab,\"blocked, critical\"\n\
                 http://example.com/x,NEWS,News,2014-04-15,citizenlab,\n";
        let v = parse("ru.csv", t).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].url, "https://ipvnews.org/");
        assert_eq!(v[0].category_code.as_deref(), Some("HATE"));
        assert_eq!(v[1].category_code.as_deref(), Some("NEWS"));
    }

    #[test]
    fn plain_list_with_all_bad_lines_reported() {
        let t = "# lab targets\nhttps://facebook.com/\n\nftp://x.org/\nnot a url\nhttp://rt.com/\n";
        let Err(InputError::Bad(b)) = parse("l.txt", t) else {
            panic!("expected errors")
        };
        assert_eq!(b.len(), 2, "{b:?}");
        assert!(b[0].starts_with("l.txt:4:"));
        assert!(b[1].starts_with("l.txt:5:"));
        let ok = parse("l.txt", "https://facebook.com/\nhttp://rt.com/\n").unwrap();
        assert_eq!(ok.len(), 2);
    }

    #[test]
    fn citizen_lab_ru_list_parses() {
        // The first 300 entries of the real list (quoted notes with commas among them).
        let p = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/citizenlab-ru-head.csv"
        );
        let v = load(Path::new(p)).unwrap();
        assert_eq!(v.len(), 300);
        assert_eq!(v[0].url, "https://ipvnews.org/");
        assert_eq!(v[299].url, "https://www.1c-bitrix.ru/");
        assert!(v
            .iter()
            .all(|i| i.category_code.as_deref().is_some_and(|c| !c.is_empty())));
    }

    #[test]
    fn csv_errors_name_the_file_and_line() {
        let t = "url,category_code\nhttps://a.example/,NEWS\n\"https://b.example/,NEWS\n";
        let Err(InputError::Bad(b)) = parse("list.csv", t) else {
            panic!("expected an error")
        };
        assert!(b[0].starts_with("list.csv:3:1: unterminated"), "{b:?}");
    }
}
