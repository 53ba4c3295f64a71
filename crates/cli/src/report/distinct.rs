//! Exact distinct counts in bounded memory.
//!
//! Every distinct count of the report (merchants overall and per month; blocked listings
//! overall, per month, per category, per caller) is the number of distinct `(group, id)` keys
//! of one group. An id is kept as its 128-bit xxh3 hash: two different ids share a hash with
//! probability about n²/2¹²⁹ (for the 2021 year's 3 million ids, below 10⁻²⁶), so the counts
//! are exact for any real log. Keys go into one hash set; when it holds `cap` keys it is
//! sorted and written to a temporary run file and emptied, and at the end the runs (and what
//! is left in memory) are merged in order, counting each key once. Memory is bounded by `cap`
//! whatever the log's size; disk by 20 bytes per distinct key per run.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{BufReader, BufWriter, Read, Write};

use anyhow::Context;

/// One key: the group it counts in and the id's hash. Ordered by group first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Key {
    pub group: u32,
    pub hash: u128,
}

impl Key {
    const BYTES: usize = 20;

    fn encode(&self) -> [u8; Key::BYTES] {
        let mut b = [0u8; Key::BYTES];
        b[..4].copy_from_slice(&self.group.to_be_bytes());
        b[4..].copy_from_slice(&self.hash.to_be_bytes());
        b
    }

    fn decode(b: &[u8; Key::BYTES]) -> Key {
        let mut g = [0u8; 4];
        g.copy_from_slice(&b[..4]);
        let mut h = [0u8; 16];
        h.copy_from_slice(&b[4..]);
        Key {
            group: u32::from_be_bytes(g),
            hash: u128::from_be_bytes(h),
        }
    }
}

/// The keys are already hashes: the set's hasher only mixes in the group.
#[derive(Default)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Not reached for `Key` (its fields hash through write_u32 / write_u128).
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 ^= u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn write_u128(&mut self, n: u128) {
        self.0 ^= n as u64;
    }
}

/// The 128-bit hash of an id.
pub(crate) fn hash_id(id: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(id.as_bytes())
}

/// Distinct keys per group, exact, in at most `cap` keys of memory.
#[derive(Debug)]
pub(crate) struct Distinct {
    set: HashSet<Key, BuildHasherDefault<KeyHasher>>,
    cap: usize,
    runs: Vec<std::fs::File>,
    tmp: std::path::PathBuf,
    /// Keys written to run files, ever (for the summary on stderr).
    pub spilled: u64,
}

impl std::fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyHasher")
    }
}

impl Distinct {
    /// Keeps at most `cap` keys in memory; run files go to `tmp` (removed on drop: they are
    /// unlinked temporary files).
    pub(crate) fn new(cap: usize, tmp: std::path::PathBuf) -> Self {
        Distinct {
            set: HashSet::default(),
            cap: cap.max(1),
            runs: Vec::new(),
            tmp,
            spilled: 0,
        }
    }

    /// Adds a key.
    #[inline]
    pub(crate) fn insert(&mut self, group: u32, hash: u128) -> anyhow::Result<()> {
        self.set.insert(Key { group, hash });
        if self.set.len() >= self.cap {
            self.spill()?;
        }
        Ok(())
    }

    fn sorted(&mut self) -> Vec<Key> {
        let mut keys: Vec<Key> = self.set.drain().collect();
        keys.sort_unstable();
        keys
    }

    fn spill(&mut self) -> anyhow::Result<()> {
        let keys = self.sorted();
        let file = tempfile::tempfile_in(&self.tmp)
            .with_context(|| format!("cannot create a run file in {}", self.tmp.display()))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        for k in &keys {
            out.write_all(&k.encode())?;
        }
        let mut file = out.into_inner().map_err(|e| e.into_error())?;
        std::io::Seek::rewind(&mut file)?;
        self.spilled += keys.len() as u64;
        self.runs.push(file);
        Ok(())
    }

    /// Counts distinct keys per group: `counts[group]`, for groups below `groups`.
    pub(crate) fn finish(mut self, groups: usize) -> anyhow::Result<Vec<u64>> {
        let mut counts = vec![0u64; groups];
        let mut count = |k: &Key| {
            if let Some(c) = counts.get_mut(k.group as usize) {
                *c += 1;
            }
        };
        if self.runs.is_empty() {
            for k in &self.set {
                count(k);
            }
            return Ok(counts);
        }
        let memory = self.sorted();
        let mut sources: Vec<Source> = self
            .runs
            .drain(..)
            .map(|f| Source::File(BufReader::with_capacity(1 << 16, f)))
            .collect();
        sources.push(Source::Memory(memory.into_iter()));
        let mut heap = BinaryHeap::new();
        for (i, s) in sources.iter_mut().enumerate() {
            if let Some(k) = s.next()? {
                heap.push(Reverse((k, i)));
            }
        }
        let mut last: Option<Key> = None;
        while let Some(Reverse((k, i))) = heap.pop() {
            if last != Some(k) {
                count(&k);
                last = Some(k);
            }
            if let Some(next) = sources[i].next()? {
                heap.push(Reverse((next, i)));
            }
        }
        Ok(counts)
    }
}

enum Source {
    File(BufReader<std::fs::File>),
    Memory(std::vec::IntoIter<Key>),
}

impl Source {
    fn next(&mut self) -> anyhow::Result<Option<Key>> {
        match self {
            Source::Memory(it) => Ok(it.next()),
            Source::File(r) => {
                let mut b = [0u8; Key::BYTES];
                match r.read_exact(&mut b) {
                    Ok(()) => Ok(Some(Key::decode(&b))),
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
                    Err(e) => Err(e).context("cannot read a run file"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count_with_cap(cap: usize) -> (Vec<u64>, u64) {
        let dir = tempfile::tempdir().unwrap();
        let mut d = Distinct::new(cap, dir.path().to_path_buf());
        // Group 0: ids 0..1000, each three times, interleaved; group 1: 0..10 many times.
        for round in 0..3 {
            for i in 0..1000 {
                d.insert(0, hash_id(&format!("m{i}"))).unwrap();
                d.insert(1, hash_id(&format!("m{}", (i + round) % 10)))
                    .unwrap();
            }
        }
        let spilled = d.spilled;
        (d.finish(3).unwrap(), spilled)
    }

    #[test]
    fn counts_are_exact_in_memory_and_with_spilled_runs() {
        let (in_memory, spilled) = count_with_cap(1 << 20);
        assert_eq!(spilled, 0);
        assert_eq!(in_memory, vec![1000, 10, 0]);
        // A cap of 64 keys: dozens of runs, the same counts.
        let (spilled_counts, spilled) = count_with_cap(64);
        assert!(spilled > 1000, "{spilled}");
        assert_eq!(spilled_counts, vec![1000, 10, 0]);
    }

    #[test]
    fn keys_round_trip_through_run_files() {
        let k = Key {
            group: 7,
            hash: hash_id("L1"),
        };
        assert_eq!(Key::decode(&k.encode()), k);
    }
}
