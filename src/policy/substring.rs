//! The substring matcher: patterns found anywhere in a name (the sloppy `*t.co*` of 2021).
//!
//! Rules name few substrings, so a scan of the name's byte pairs against an 8 KiB bitmap of
//! the patterns' first two bytes (it stays in L1) rejects almost every name in a few
//! nanoseconds per byte; only a pair that starts some pattern is verified. One-byte patterns
//! use a 256-bit byte set. Large pattern sets (over 64) fall back to Aho-Corasick.

use aho_corasick::AhoCorasick;

/// Patterns with the rule references of each.
#[derive(Debug, Default)]
pub(crate) struct SubstringMatcher {
    patterns: Vec<Box<[u8]>>,
    refs: Vec<Vec<u32>>,
    pairs: Vec<u64>,
    singles: [u64; 4],
    ac: Option<AhoCorasick>,
}

const SMALL: usize = 64;

impl SubstringMatcher {
    /// Builds the matcher from distinct, lower-case, non-empty patterns and their refs.
    pub(crate) fn new(patterns: Vec<String>, refs: Vec<Vec<u32>>) -> SubstringMatcher {
        let mut m = SubstringMatcher {
            patterns: patterns.iter().map(|p| p.as_bytes().into()).collect(),
            refs,
            pairs: Vec::new(),
            singles: [0; 4],
            ac: None,
        };
        if m.patterns.len() > SMALL {
            m.ac = AhoCorasick::new(&patterns).ok();
        } else {
            m.pairs = vec![0; 1024];
            for p in &m.patterns {
                if p.len() == 1 {
                    m.singles[usize::from(p[0] >> 6)] |= 1 << (p[0] & 63);
                } else {
                    let k = pair(p[0], p[1]);
                    m.pairs[k >> 6] |= 1 << (k & 63);
                }
            }
        }
        m
    }

    /// Whether there are no patterns.
    pub(crate) fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Calls `f(pattern length, refs)` for every occurrence of a pattern in `name`.
    #[inline]
    pub(crate) fn for_each_match(&self, name: &[u8], mut f: impl FnMut(u32, &[u32])) {
        if self.patterns.is_empty() {
            return;
        }
        if let Some(ac) = &self.ac {
            for m in ac.find_overlapping_iter(name) {
                f(
                    (m.end() - m.start()) as u32,
                    &self.refs[m.pattern().as_usize()],
                );
            }
            return;
        }
        for i in 0..name.len() {
            let b = name[i];
            if self.singles[usize::from(b >> 6)] & (1 << (b & 63)) != 0 {
                self.verify(name, i, 1, &mut f);
            }
            if i + 1 < name.len() {
                let k = pair(b, name[i + 1]);
                if self.pairs[k >> 6] & (1 << (k & 63)) != 0 {
                    self.verify(name, i, 2, &mut f);
                }
            }
        }
    }

    /// Reports the patterns of length >= 2 (or == 1) starting at `name[i..]`.
    #[inline(never)]
    fn verify(&self, name: &[u8], i: usize, kind: usize, f: &mut impl FnMut(u32, &[u32])) {
        let rest = &name[i..];
        for (p, refs) in self.patterns.iter().zip(&self.refs) {
            if (kind == 1) == (p.len() == 1) && rest.starts_with(p) {
                f(p.len() as u32, refs);
            }
        }
    }

    /// Heap bytes used.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.pairs.capacity() * 8
            + self.patterns.iter().map(|p| p.len() + 16).sum::<usize>()
            + self
                .refs
                .iter()
                .map(|r| r.capacity() * 4 + 24)
                .sum::<usize>()
            + self.ac.as_ref().map_or(0, |a| a.memory_usage())
    }
}

#[inline(always)]
fn pair(a: u8, b: u8) -> usize {
    // Two bytes folded to 13 bits (8 KiB of bitmap); collisions only cost a verification.
    ((usize::from(a) << 5) ^ usize::from(b)) & 0x1fff
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(m: &SubstringMatcher, name: &str) -> Vec<(u32, Vec<u32>)> {
        let mut v = Vec::new();
        m.for_each_match(name.as_bytes(), |len, refs| v.push((len, refs.to_vec())));
        v
    }

    #[test]
    fn finds_every_occurrence_like_a_naive_scan() {
        let pats = vec![
            "t.co".to_string(),
            "x".to_string(),
            "soft".to_string(),
            "co".to_string(),
        ];
        let m = SubstringMatcher::new(pats.clone(), vec![vec![1], vec![2], vec![3], vec![4]]);
        for name in [
            "microsoft.com",
            "reddit.com",
            "example.org",
            "t.co",
            "xxx.t.co.co",
            "",
            "c",
        ] {
            let mut want: Vec<(u32, Vec<u32>)> = Vec::new();
            for i in 0..name.len() {
                for (k, p) in pats.iter().enumerate() {
                    if name[i..].starts_with(p.as_str()) {
                        want.push((p.len() as u32, vec![k as u32 + 1]));
                    }
                }
            }
            let mut got = found(&m, name);
            got.sort();
            want.sort();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn large_sets_use_aho_corasick() {
        let pats: Vec<String> = (0..100).map(|i| format!("p{i}q")).collect();
        let refs = (0..100).map(|i| vec![i]).collect();
        let m = SubstringMatcher::new(pats, refs);
        assert!(m.ac.is_some());
        assert_eq!(found(&m, "ap42qz"), vec![(4, vec![42])]);
    }
}
