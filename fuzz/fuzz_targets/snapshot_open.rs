//! Snapshot opening: the bytes as a whole file (header checks), and the bytes as an archive
//! behind a header whose checksums fit (so the archive validation itself is reached). Either
//! a snapshot whose every read works, or a typed error; never a panic.
#![no_main]

use std::io::Write;
use std::path::PathBuf;

use cccgate_snapshot::{HEADER_LEN, Snapshot};
use libfuzzer_sys::fuzz_target;

fn scratch() -> PathBuf {
    std::env::temp_dir().join(format!("cccgate-fuzz-snapshot-{}.ccc", std::process::id()))
}

/// A header for `archive` with the right lengths and checksums (format.rs's layout).
fn framed(archive: &[u8], sequence: u64) -> Vec<u8> {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(b"CCCGSNAP");
    h[8..12].copy_from_slice(&cccgate_snapshot::FORMAT_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
    h[16..24].copy_from_slice(&(archive.len() as u64).to_le_bytes());
    h[24..40].copy_from_slice(&xxhash_rust::xxh3::xxh3_128(archive).to_le_bytes());
    h[40..48].copy_from_slice(&sequence.to_le_bytes());
    let sum = xxhash_rust::xxh3::xxh3_64(&h[..56]);
    h[56..64].copy_from_slice(&sum.to_le_bytes());
    let mut v = h.to_vec();
    v.extend_from_slice(archive);
    v
}

fn exercise(bytes: &[u8]) {
    let path = scratch();
    let mut f = std::fs::File::create(&path).expect("scratch file");
    f.write_all(bytes).expect("write scratch");
    drop(f);
    for s in [Snapshot::read(&path), Snapshot::open(&path)].into_iter().flatten() {
        let _ = s.counts();
        let _ = s.catalogue();
        for r in s.records().take(64) {
            assert_eq!(s.record(r.number).as_ref(), Some(&r));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    exercise(data);
    let sequence = data.get(..8).map_or(1, |b| u64::from_le_bytes(b.try_into().unwrap()));
    exercise(&framed(data.get(8..).unwrap_or_default(), sequence));
});
