//! The domain matcher: suffix and exact names in one open-addressing hash table.
//!
//! Every stored name is hashed from its last byte to its first, so a lookup walks the query
//! name once, right to left, and at each label boundary already holds the hash of that suffix
//! (`www.facebook.com` yields `com`, `facebook.com`, `www.facebook.com`). A slot is one `u64`:
//! a 32-bit tag from the hash and the offset of the entry in one byte arena. An entry is
//! `[name len: u8][name][ref count: u16 LE][refs: u32 LE ...]`, so a name costs its length plus
//! about 17 bytes, and a lookup allocates nothing.

/// FNV-1a over the bytes of a suffix, last byte first.
pub(crate) const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// One step of the right-to-left hash.
#[inline(always)]
pub(crate) fn hash_step(h: u64, b: u8) -> u64 {
    (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
}

/// The finaliser (murmur3 fmix64), giving well-spread tag and index bits.
#[inline(always)]
pub(crate) fn finish(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The hash of a whole name, as the lookup computes it for that suffix.
pub(crate) fn hash_name(name: &[u8]) -> u64 {
    finish(name.iter().rev().fold(FNV_OFFSET, |h, b| hash_step(h, *b)))
}

const EMPTY: u64 = u64::MAX;

/// A name to store: `len` bytes at `off` of the builder's arena, with one rule reference.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NameRef {
    pub(crate) off: u32,
    pub(crate) len: u8,
    pub(crate) r: u32,
}

/// Collects names into one arena before [`DomainMatcher::build`].
#[derive(Debug, Default)]
pub(crate) struct NamesBuilder {
    pub(crate) arena: Vec<u8>,
    pub(crate) items: Vec<NameRef>,
}

impl NamesBuilder {
    /// Adds `name` (at most 255 bytes) with reference `r`.
    pub(crate) fn push(&mut self, name: &[u8], r: u32) {
        let off = self.arena.len() as u32;
        self.arena.extend_from_slice(name);
        self.items.push(NameRef {
            off,
            len: name.len() as u8,
            r,
        });
    }

    /// Builds the matcher.
    pub(crate) fn build(self, rank: impl Fn(u32) -> u32) -> DomainMatcher {
        DomainMatcher::build(&self.arena, self.items, rank)
    }
}

/// An immutable map from names to lists of rule references.
#[derive(Debug, Default)]
pub(crate) struct DomainMatcher {
    slots: Vec<u64>,
    arena: Vec<u8>,
    names: usize,
}

impl DomainMatcher {
    /// Builds the matcher from names (slices of `arena`) with their refs; a name given several
    /// times gets all its refs, ordered by `rank(ref)` (the rule order), duplicates removed.
    pub(crate) fn build(
        arena_in: &[u8],
        mut items: Vec<NameRef>,
        rank: impl Fn(u32) -> u32,
    ) -> DomainMatcher {
        let name_of = |n: &NameRef| &arena_in[n.off as usize..n.off as usize + usize::from(n.len)];
        items.sort_unstable_by(|a, b| {
            name_of(a)
                .cmp(name_of(b))
                .then_with(|| rank(a.r).cmp(&rank(b.r)))
                .then(a.r.cmp(&b.r))
        });
        items.dedup_by(|a, b| a.r == b.r && name_of(a) == name_of(b));
        let distinct = items
            .windows(2)
            .filter(|w| name_of(&w[0]) != name_of(&w[1]))
            .count()
            + usize::from(!items.is_empty());
        // About 80% load: 10 bytes of table per name.
        let cap = (distinct + distinct / 4 + 1).max(8);
        let mut slots = vec![EMPTY; cap];
        let bytes: usize = items.iter().map(|n| usize::from(n.len)).sum();
        let mut arena = Vec::with_capacity(bytes + items.len() * 4 + distinct * 3);
        let mut i = 0;
        while i < items.len() {
            let name = name_of(&items[i]);
            let mut j = i;
            while j < items.len() && name_of(&items[j]) == name {
                j += 1;
            }
            let group = &items[i..j.min(i + usize::from(u16::MAX))];
            let off = arena.len() as u32;
            arena.push(name.len() as u8);
            arena.extend_from_slice(name);
            arena.extend_from_slice(&(group.len() as u16).to_le_bytes());
            for n in group {
                arena.extend_from_slice(&n.r.to_le_bytes());
            }
            let h = hash_name(name);
            let mut idx = index_of(h, cap);
            while slots[idx] != EMPTY {
                idx += 1;
                if idx == cap {
                    idx = 0;
                }
            }
            slots[idx] = ((h >> 32) << 32) | u64::from(off);
            i = j;
        }
        arena.shrink_to_fit();
        DomainMatcher {
            slots,
            arena,
            names: distinct,
        }
    }

    /// The refs stored for exactly `name` (whose hash, from [`finish`], is `h`), as LE bytes.
    #[inline]
    pub(crate) fn get(&self, name: &[u8], h: u64) -> Option<&[u8]> {
        if self.names == 0 {
            return None;
        }
        let cap = self.slots.len();
        let tag = h >> 32;
        let mut idx = index_of(h, cap);
        loop {
            let slot = self.slots[idx];
            if slot == EMPTY {
                return None;
            }
            if slot >> 32 == tag {
                let off = (slot & 0xffff_ffff) as usize;
                let len = usize::from(self.arena[off]);
                let stored = &self.arena[off + 1..off + 1 + len];
                if stored == name {
                    let n_at = off + 1 + len;
                    let n =
                        usize::from(u16::from_le_bytes([self.arena[n_at], self.arena[n_at + 1]]));
                    return Some(&self.arena[n_at + 2..n_at + 2 + 4 * n]);
                }
            }
            idx += 1;
            if idx == cap {
                idx = 0;
            }
        }
    }

    /// The number of distinct names.
    pub(crate) fn len(&self) -> usize {
        self.names
    }

    /// Heap bytes used.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.slots.capacity() * 8 + self.arena.capacity()
    }
}

/// Maps a hash to a slot with a multiply instead of a modulo (Lemire's fast range).
#[inline(always)]
fn index_of(h: u64, cap: usize) -> usize {
    (((h & 0xffff_ffff) * cap as u64) >> 32) as usize
}

/// Iterates the `u32` refs of a list returned by [`DomainMatcher::get`].
#[inline]
pub(crate) fn refs(bytes: &[u8]) -> impl Iterator<Item = u32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_and_finds_names_with_all_refs() {
        let mut b = NamesBuilder::default();
        b.push(b"facebook.com", 3);
        b.push(b"fb.com", 3);
        b.push(b"facebook.com", 1);
        b.push(b"facebook.com", 1);
        let m = b.build(|r| r);
        assert_eq!(m.len(), 2);
        let got: Vec<u32> =
            refs(m.get(b"facebook.com", hash_name(b"facebook.com")).unwrap()).collect();
        assert_eq!(got, vec![1, 3]);
        assert!(m.get(b"facebook.co", hash_name(b"facebook.co")).is_none());
        assert!(m.get(b"com", hash_name(b"com")).is_none());
    }

    #[test]
    fn many_names_round_trip() {
        let mut b = NamesBuilder::default();
        for i in 0..20_000u32 {
            b.push(format!("host{i}.example{}.org", i % 97).as_bytes(), i);
        }
        let m = b.build(|r| r);
        for i in (0..20_000u32).step_by(7) {
            let n = format!("host{i}.example{}.org", i % 97);
            let got: Vec<u32> =
                refs(m.get(n.as_bytes(), hash_name(n.as_bytes())).unwrap()).collect();
            assert_eq!(got, vec![i]);
        }
        assert!(m
            .get(b"host1.example2.org", hash_name(b"host1.example2.org"))
            .is_none());
    }
}
