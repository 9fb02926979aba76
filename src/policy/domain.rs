//! The domain matcher: suffix and exact names in one open-addressing hash table.
//!
//! Every stored name is hashed from its last byte to its first, so a lookup walks the query
//! name once, right to left, and at each label boundary already holds the hash of that suffix
//! (`www.facebook.com` yields `com`, `facebook.com`, `www.facebook.com`). The table is
//! SwissTable-like: groups of eight slots, each group one `u64` of 7-bit tags (high bit set =
//! occupied) matched eight at a time with SWAR arithmetic, next to the eight arena offsets of
//! its entries. A miss usually reads one group; a hit one group and one arena entry. An entry
//! is `[name len: u8][name][ref count: u16 LE][refs: u32 LE ...]`, so a name costs its length
//! plus about 14 bytes (6.25 of them in the table at 80% load), and a lookup allocates nothing.

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

/// Eight slots: their tags (one byte each, 0 = empty) and their values.
#[derive(Debug, Clone, Copy)]
struct Group {
    tags: u64,
    vals: [u32; 8],
}

const EMPTY_GROUP: Group = Group {
    tags: 0,
    vals: [0; 8],
};
const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

impl Group {
    /// Bytes equal to `tag` (high bit of each matching byte set; rare false positives are
    /// weeded out by the caller's comparison).
    #[inline(always)]
    fn matches(&self, tag: u8) -> u64 {
        let x = self.tags ^ (LO * u64::from(tag));
        x.wrapping_sub(LO) & !x & HI
    }

    /// Empty slots (high bit of each empty byte set).
    #[inline(always)]
    fn empties(&self) -> u64 {
        !self.tags & HI
    }
}

#[inline(always)]
fn tag_of(h: u64) -> u8 {
    0x80 | (h >> 57) as u8
}

/// The first group to probe, by Lemire's multiply-shift range reduction.
#[inline(always)]
fn group_of(h: u64, n: usize) -> usize {
    (((h & 0xffff_ffff) * n as u64) >> 32) as usize
}

/// Finds the slot value for which `eq` holds among slots tagged like `h`.
#[inline(always)]
fn find(groups: &[Group], h: u64, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
    let n = groups.len();
    let tag = tag_of(h);
    let mut g = group_of(h, n);
    loop {
        let grp = &groups[g];
        let mut m = grp.matches(tag);
        while m != 0 {
            let k = (m.trailing_zeros() / 8) as usize;
            let v = grp.vals[k];
            if eq(v) {
                return Some(v);
            }
            m &= m - 1;
        }
        if grp.empties() != 0 {
            return None;
        }
        g += 1;
        if g == n {
            g = 0;
        }
    }
}

fn insert(groups: &mut [Group], h: u64, v: u32) {
    let n = groups.len();
    let mut g = group_of(h, n);
    loop {
        let e = groups[g].empties();
        if e != 0 {
            let k = (e.trailing_zeros() / 8) as usize;
            groups[g].tags |= u64::from(tag_of(h)) << (8 * k);
            groups[g].vals[k] = v;
            return;
        }
        g += 1;
        if g == n {
            g = 0;
        }
    }
}

#[inline(always)]
fn bloom_word(h: u64, n: usize) -> usize {
    // The low 32 bits, like the group index, but a different table size.
    (((h & 0xffff_ffff) * n as u64) >> 32) as usize
}

#[inline(always)]
fn bloom_bits(h: u64) -> u64 {
    (1u64 << ((h >> 32) & 63)) | (1u64 << ((h >> 40) & 63))
}

#[inline(always)]
fn label_bit(labels: usize) -> u64 {
    1u64 << (labels.clamp(1, 64) - 1)
}

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
    groups: Vec<Group>,
    arena: Vec<u8>,
    names: usize,
    /// A blocked Bloom filter (8 bits per name, 2 bits set in one word per name): most absent
    /// suffixes are rejected here, in a structure small enough to stay in cache.
    bloom: Vec<u64>,
    /// Bit `i` set if some stored name has `i + 1` labels (63 = 64 or more).
    label_counts: u64,
}

impl DomainMatcher {
    /// Builds the matcher from names (slices of `arena_in`) with their refs; a name given
    /// several times gets all its refs, ordered by `rank(ref)` (the rule order), duplicates
    /// removed. Grouping is by hash, so building is linear (no sort of the names).
    pub(crate) fn build(
        arena_in: &[u8],
        items: Vec<NameRef>,
        rank: impl Fn(u32) -> u32,
    ) -> DomainMatcher {
        let name_of = |n: &NameRef| &arena_in[n.off as usize..n.off as usize + usize::from(n.len)];
        // At most 80% of the slots used: a group of 8 per 6.4 names.
        let n_groups = (items.len() * 10).div_ceil(64).max(1);
        let mut groups = vec![EMPTY_GROUP; n_groups];
        // Pass 1: distinct names get ids (stored in the slots for now); the refs of repeated
        // names are set aside.
        let mut first_item: Vec<u32> = Vec::new();
        let mut extra: Vec<(u32, u32)> = Vec::new();
        let mut bytes = 0usize;
        for (i, it) in items.iter().enumerate() {
            let name = name_of(it);
            let h = hash_name(name);
            match find(&groups, h, |id| {
                name_of(&items[first_item[id as usize] as usize]) == name
            }) {
                Some(id) => extra.push((id, it.r)),
                None => {
                    insert(&mut groups, h, first_item.len() as u32);
                    first_item.push(i as u32);
                    bytes += name.len() + 7;
                }
            }
        }
        extra.sort_unstable();
        let distinct = first_item.len();
        // Pass 2: the arena, one entry per name; `first_item[id]` becomes the entry's offset.
        let mut arena = Vec::with_capacity(bytes + extra.len() * 4);
        let mut list: Vec<u32> = Vec::new();
        let mut e = 0;
        for id in 0..distinct {
            let first = &items[first_item[id] as usize];
            list.clear();
            list.push(first.r);
            while e < extra.len() && extra[e].0 == id as u32 {
                list.push(extra[e].1);
                e += 1;
            }
            list.sort_unstable_by_key(|r| (rank(*r), *r));
            list.dedup();
            list.truncate(usize::from(u16::MAX));
            let name = name_of(first);
            first_item[id] = arena.len() as u32;
            arena.push(name.len() as u8);
            arena.extend_from_slice(name);
            arena.extend_from_slice(&(list.len() as u16).to_le_bytes());
            for r in &list {
                arena.extend_from_slice(&r.to_le_bytes());
            }
        }
        drop(extra);
        let offset_of = first_item;
        for g in &mut groups {
            for k in 0..8 {
                if (g.tags >> (8 * k)) & 0x80 != 0 {
                    g.vals[k] = offset_of[g.vals[k] as usize];
                }
            }
        }
        arena.shrink_to_fit();
        let mut bloom = vec![0u64; distinct.div_ceil(8).max(1)];
        let mut label_counts = 0u64;
        for &off in &offset_of {
            let off = off as usize;
            let name = &arena[off + 1..off + 1 + usize::from(arena[off])];
            let h = hash_name(name);
            let w = bloom_word(h, bloom.len());
            bloom[w] |= bloom_bits(h);
            label_counts |= label_bit(name.iter().filter(|b| **b == b'.').count() + 1);
        }
        DomainMatcher {
            groups,
            arena,
            names: distinct,
            bloom,
            label_counts,
        }
    }

    /// Whether some stored name has `labels` labels.
    #[inline(always)]
    pub(crate) fn has_label_count(&self, labels: usize) -> bool {
        self.label_counts & label_bit(labels) != 0
    }

    /// Whether a name hashing to `h` may be stored (no false negatives).
    #[inline(always)]
    pub(crate) fn may_contain(&self, h: u64) -> bool {
        let bits = bloom_bits(h);
        self.bloom[bloom_word(h, self.bloom.len())] & bits == bits
    }

    /// The refs stored for exactly `name` (whose hash, from [`finish`], is `h`), as LE bytes.
    #[inline]
    pub(crate) fn get(&self, name: &[u8], h: u64) -> Option<&[u8]> {
        if self.names == 0 {
            return None;
        }
        let arena = &self.arena;
        let off = find(&self.groups, h, |off| {
            let off = off as usize;
            let len = usize::from(arena[off]);
            arena.get(off + 1..off + 1 + len) == Some(name)
        })? as usize;
        let n_at = off + 1 + usize::from(arena[off]);
        let n = usize::from(u16::from_le_bytes([arena[n_at], arena[n_at + 1]]));
        arena.get(n_at + 2..n_at + 2 + 4 * n)
    }

    /// The number of distinct names.
    pub(crate) fn len(&self) -> usize {
        self.names
    }

    /// Heap bytes used.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.groups.capacity() * std::mem::size_of::<Group>()
            + self.arena.capacity()
            + self.bloom.capacity() * 8
    }
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
