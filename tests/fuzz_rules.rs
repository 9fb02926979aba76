//! Fuzzing the rules and config parsers (proptest, bounded so it runs in every `cargo test`):
//! no input panics, and every error points inside the text.

use std::path::Path;

use proptest::prelude::*;

use blocklab::config::Config;
use blocklab::rules::RuleSet;

const RU: &str = include_str!("../rules/ru.toml");

fn check_errors(text: &str, err: &blocklab::rules::RulesError) {
    assert!(!err.diagnostics.is_empty());
    let lines = text.lines().count().max(1) + 1;
    for d in &err.diagnostics {
        if d.path.ends_with("fuzz.toml") {
            assert!(
                d.line >= 1 && d.line <= lines,
                "line {} of {lines}: {d}",
                d.line
            );
            assert!(d.column >= 1, "{d}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    #[test]
    fn random_text_never_panics(text in "\\PC{0,400}") {
        if let Err(e) = RuleSet::parse_str(Path::new("fuzz.toml"), &text) {
            check_errors(&text, &e);
        }
        let _ = Config::from_str("fuzz.toml", &text);
    }
}

proptest! {
    // Each case re-reads the 2 MB of imported lists: fewer cases.
    #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

    #[test]
    fn mutated_shipped_rules_never_panic(pos in 0usize..RU.len(), len in 0usize..40, insert in "[\\[\\]=\"a-z0-9.:/ \\n,{}-]{0,30}") {
        let mut cut = pos.min(RU.len());
        while !RU.is_char_boundary(cut) { cut -= 1; }
        let mut end = (cut + len).min(RU.len());
        while !RU.is_char_boundary(end) { end -= 1; }
        let text = format!("{}{}{}", &RU[..cut], insert, &RU[end..]);
        // Imports resolve relative to the real rules directory.
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/rules/fuzz.toml"));
        match RuleSet::parse_str(path, &text) {
            Ok(f) => prop_assert_eq!(!f.jurisdiction.code.is_empty(), true),
            Err(e) => check_errors(&text, &e),
        }
    }
}
