//! `blocklab rules lint` reports every mistake as `path:line:column: message` and exits 1;
//! every table of every shipped rules file rejects a junk key.

use std::process::Command;

fn lint(paths: &[&std::path::Path]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_blocklab"))
        .args(["rules", "lint"])
        .args(paths)
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8(out.stdout).unwrap())
}

const GOOD: &str = r#"[jurisdiction]
code = "xx"
name = "Test"
utc_offset = "+00:00"

[[rule]]
id = "a"
domains = ["example.com"]
since = "2022-01-01"
techniques = ["dns-nxdomain"]
"#;

#[test]
fn shipped_rules_are_clean() {
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/rules");
    let (code, out) = lint(&[std::path::Path::new(rules)]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("ok: 2 file(s)"), "{out}");
}

#[test]
fn three_mistakes_give_three_located_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("xx.toml");
    let text = GOOD.to_string()
        + r#"
[[rule]]
id = "b"
ips = ["10.0.0.0/33"]
since = "2022-02-30"
techniques = ["tls-rst"]
"#;
    std::fs::write(&p, &text).unwrap();
    let (code, out) = lint(&[&p]);
    assert_eq!(code, Some(1), "{out}");
    let shown = p.display().to_string();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with(&format!("{shown}:14:8: ")) && lines[0].contains("10.0.0.0/33"),
        "{out}"
    );
    assert!(
        lines[1].starts_with(&format!("{shown}:15:9: ")) && lines[1].contains("no such day"),
        "{out}"
    );
    assert!(
        lines[2].starts_with(&format!("{shown}:16:15: "))
            && lines[2].contains("unknown technique `tls-rst`"),
        "{out}"
    );
}

#[test]
fn every_kind_of_mistake_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("xx.toml");
    let text = GOOD.to_string()
        + r#"
[[rule]]
id = "a"
domains = ["b.example"]
since = "2022-05-01"
until = "2022-04-01"
techniques = ["throttle"]
colour = "red"

[[rule]]
id = "c"
import = { path = "missing.lst", format = "domains" }
techniques = ["ip-drop"]
"#;
    std::fs::write(&p, &text).unwrap();
    let (code, out) = lint(&[&p]);
    assert_eq!(code, Some(1));
    for want in [
        "unknown key `colour`",
        "`until` (2022-04-01) must be after `since` (2022-05-01)",
        "needs `throttle_kbps`",
        "duplicate rule id `a`",
        "cannot read import",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    assert!(
        out.lines().all(|l| l.starts_with(&p.display().to_string())),
        "{out}"
    );
}

#[test]
fn bad_lines_of_an_import_are_all_reported_with_their_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("list.lst"),
        "good.example\nbad name.example\n# fine\nalso..bad\n",
    )
    .unwrap();
    let p = dir.path().join("xx.toml");
    std::fs::write(
        &p,
        GOOD.replace(
            "domains = [\"example.com\"]",
            "import = { path = \"list.lst\", format = \"domains\" }",
        ),
    )
    .unwrap();
    let (code, out) = lint(&[&p]);
    assert_eq!(code, Some(1));
    let list = dir.path().join("list.lst").display().to_string();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].starts_with(&format!("{list}:2:1: ")), "{out}");
    assert!(lines[1].starts_with(&format!("{list}:4:1: ")), "{out}");
}

#[test]
fn toml_syntax_errors_are_located() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("xx.toml");
    std::fs::write(&p, "[jurisdiction]\ncode = \"xx\nname = 1\n").unwrap();
    let (code, out) = lint(&[&p]);
    assert_eq!(code, Some(1));
    assert!(out.starts_with(&format!("{}:2:", p.display())), "{out}");
}

/// Adds `junk = 1` to each table of each shipped rules file in turn: every one is rejected, at
/// the line of the junk key.
#[test]
fn junk_key_in_any_shipped_table_is_rejected() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/rules");
    let mut checked = 0;
    for name in ["ru.toml", "eu.toml"] {
        let text = std::fs::read_to_string(format!("{dir}/{name}")).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, _) in lines.iter().enumerate().filter(|(_, l)| l.starts_with('[')) {
            let mut copy: Vec<&str> = lines.clone();
            copy.insert(i + 1, "junk = 1");
            let path = std::path::Path::new(dir).join(format!("junk-{name}"));
            let err = blocklab::rules::RuleSet::parse_str(&path, &copy.join("\n")).unwrap_err();
            assert_eq!(err.len(), 1, "{name} table at line {}: {err}", i + 1);
            assert_eq!(err.diagnostics[0].line, i + 2, "{err}");
            assert!(
                err.diagnostics[0].message.contains("unknown key `junk`"),
                "{err}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 16, "checked {checked} tables");
}

#[test]
fn every_new_key_rejects_bad_values_with_positions() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("xx.toml");
    let text = r#"[jurisdiction]
code = "xx"

[[isp]]
id = "Bad ISP"

[[isp]]
id = "home"
techniques = { "tls-rst" = "http-blockpage" }

[[rule]]
id = "c"
domains = ["example.com"]
ports = ["tcp/443", "sctp/1", "udp/9-1"]
ech = "yes"
ja4 = ["t13d1516h2_8daaf6152771"]
hours = ["25:00-26:00"]
isp = ["mobile"]
techniques = ["freeze"]
residual_secs = -1
"#;
    std::fs::write(&p, text).unwrap();
    let (code, out) = lint(&[&p]);
    assert_eq!(code, Some(1), "{out}");
    let shown = p.display().to_string();
    let want = [
        (5, 6, "bad ISP id"),
        (9, 14, "unknown technique `tls-rst`"),
        (14, 21, "sctp"),
        (14, 31, "udp/9-1"),
        (15, 7, "`ech` must be true or false"),
        (16, 8, "not a JA4 fingerprint"),
        (17, 10, "25:00"),
        (18, 8, "no [[isp]] profile `mobile`"),
        (19, 14, "`freeze` needs `freeze_after_bytes`"),
        (20, 17, "`residual_secs` must be a positive integer"),
    ];
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), want.len(), "{out}");
    for (line, (l, c, msg)) in lines.iter().zip(want) {
        assert!(
            line.starts_with(&format!("{shown}:{l}:{c}: ")) && line.contains(msg),
            "want {l}:{c} {msg}, got: {line}\n{out}"
        );
    }
}

#[test]
fn freeze_after_bytes_needs_freeze() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("xx.toml");
    let text = GOOD.to_string() + "freeze_after_bytes = 16384\n";
    std::fs::write(&p, &text).unwrap();
    let (code, out) = lint(&[&p]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(":11:1: `freeze_after_bytes` is set but `freeze`"),
        "{out}"
    );
}
