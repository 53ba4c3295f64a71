//! The snapshots of the swap benchmark: two registers that disagree, in the disk of three
//! snapshot files, whatever the number of swaps.
//!
//! # Two registers that disagree
//!
//! Odd sequences serve the base register (`snap-1.ccc`, the benchmark's cache); even ones
//! serve the *alternate* register: the base with every certificate whose number falls in
//! [`FLIP_ONE_IN`] (by a hash of the number, [`flipped`]) revoked. Every swap therefore
//! changes the verdict of the listings naming one of those certificates (about one in
//! twenty of the 2021 mix): a swap that was torn, or an answer decided by another snapshot
//! than the one it names, shows as a mismatch. [`expected_on`] gives the reason a listing
//! must get from a snapshot of either kind, from the reason the generator expects of the
//! base and the listing's certificate number.
//!
//! # Bounded disk
//!
//! The next snapshot is prepared while the current one serves, in the served directory under
//! a name the gateway ignores (`.snap-N.ccc.next`), and renamed into place at the swap. Base
//! snapshots are the base file under a new sequence; alternate ones are the previous
//! alternate file under a new sequence (that file is read, then removed, before the new one
//! is written), and the first one is built from the base at the start of the run. A new
//! sequence costs one read of the file, its checksum checked, the archived sequence and the
//! header rewritten, a new checksum and one write ([`SnapshotBytes::read_unvalidated`],
//! [`SnapshotBytes::with_sequence`]): no rebuild, and no structural validation, which the
//! gateway does in full when it loads the file, as for any snapshot. So each swap is a
//! distinct, verified snapshot with its own sequence and content id, for a fraction of a
//! second of preparation. A base-kind file that has been
//! swapped out is removed at once. So the directory holds at most the base, the snapshot in
//! force and the one being prepared: three snapshot files. Files are written without
//! `fsync` (a benchmark needs no durability, and most live a second), and nothing but the
//! base is left when the run ends.

use std::path::{Path, PathBuf};

use cccgate_core::{CertNumber, Reason, Status};
use cccgate_snapshot::{Snapshot, SnapshotBuilder, SnapshotBytes, SnapshotDir, file_name};

use crate::embedded::{EmbeddedError, bench_build_info};

/// One certificate in this many is revoked in the alternate register.
pub const FLIP_ONE_IN: u64 = 16;

/// The sequence of the base register's file.
pub const BASE_SEQUENCE: u64 = 1;

/// Which register a snapshot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The base register (odd sequences).
    Base,
    /// The base with the [`flipped`] certificates revoked (even sequences).
    Alternate,
}

/// The register a sequence of the swap benchmark holds.
pub fn kind_of(sequence: u64) -> Kind {
    if sequence % 2 == 1 {
        Kind::Base
    } else {
        Kind::Alternate
    }
}

/// Whether the alternate register revokes this certificate.
pub fn flipped(number: CertNumber) -> bool {
    // murmur3's finaliser: the register's numbers are sequential, a plain modulo would pick
    // a regular pattern of serials.
    let mut h = number.get();
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h.is_multiple_of(FLIP_ONE_IN)
}

/// The reason a snapshot of `kind` gives a listing that the base gives `base`, naming
/// certificate `number` (as the gateway normalises it; `None` if it does not parse).
///
/// Rules 1 to 5 (catalogue, missing, malformed, not found) do not look at a certificate's
/// status, so they stand; once the certificate is found, a revoked one is rule 7, which
/// comes before every later rule.
pub fn expected_on(kind: Kind, base: Reason, number: Option<CertNumber>) -> Reason {
    match (kind, number) {
        (Kind::Alternate, Some(n)) if flipped(n) && found(base) => Reason::CertificateRevoked,
        _ => base,
    }
}

/// Whether a listing given `reason` got as far as finding its certificate.
fn found(reason: Reason) -> bool {
    !matches!(
        reason,
        Reason::NotInCatalogue
            | Reason::SelfDeclarationProduct
            | Reason::CertificateMissing
            | Reason::CertificateMalformed
            | Reason::CertificateNotFound
    )
}

/// The alternate register of `base`, under `sequence`: every [`flipped`] certificate that
/// is not already revoked, revoked. Returns the bytes and how many certificates changed.
pub fn build_alternate(
    base: &Snapshot,
    sequence: u64,
) -> Result<(SnapshotBytes, u64), EmbeddedError> {
    let mut b = SnapshotBuilder::from_snapshot(base, bench_build_info(sequence), None);
    let mut changed = 0;
    let picked: Vec<CertNumber> = base
        .iter()
        .filter(|c| c.status != Status::Revoked && flipped(c.number))
        .map(|c| c.number)
        .collect();
    for number in picked {
        if let Some(mut r) = base.record(number) {
            r.status = Status::Revoked;
            r.status_changed = Some(r.issued);
            r.status_reason = "revoked in the swap benchmark's alternate register".into();
            b.upsert(r);
            changed += 1;
        }
    }
    Ok((b.build()?, changed))
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> EmbeddedError + '_ {
    move |source| EmbeddedError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The name a prepared snapshot waits under until its swap.
pub(crate) fn next_name(sequence: u64) -> String {
    format!(".{}.next", file_name(sequence))
}

/// Writes `bytes` to `path` (no `fsync`: see the module's notes).
fn write_plain(bytes: &SnapshotBytes, path: &Path) -> Result<(), EmbeddedError> {
    let mut file = std::fs::File::create(path).map_err(io_err(path))?;
    bytes.write_to(&mut file).map_err(io_err(path))
}

/// The files of the swap benchmark in the served directory.
#[derive(Debug)]
pub struct SwapRing {
    dir: PathBuf,
    /// Certificates the alternate register revokes (known once it is built).
    pub flipped_certs: u64,
}

impl SwapRing {
    /// Takes over `dir`, which serves `snap-1.ccc`: removes anything a previous run left
    /// (newer snapshots, prepared files, the `staging/` directory of older versions).
    pub fn new(dir: &Path) -> Result<SwapRing, EmbeddedError> {
        let ring = SwapRing {
            dir: dir.to_path_buf(),
            flipped_certs: 0,
        };
        ring.clean()?;
        Ok(ring)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Removes every file but the base.
    pub fn clean(&self) -> Result<(), EmbeddedError> {
        SnapshotDir::new(&self.dir).remove_newer(BASE_SEQUENCE)?;
        for entry in std::fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let entry = entry.map_err(io_err(&self.dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(".snap-") && name.ends_with(".next") {
                std::fs::remove_file(entry.path()).map_err(io_err(&entry.path()))?;
            }
        }
        let staging = self.dir.join("staging");
        if staging.is_dir() {
            std::fs::remove_dir_all(&staging).map_err(io_err(&staging))?;
        }
        Ok(())
    }

    /// Prepares the snapshot of `sequence` (at least 2) while `sequence - 1` serves; returns
    /// its size. Blocking: run it on the blocking pool.
    pub fn prepare(&mut self, sequence: u64) -> Result<u64, EmbeddedError> {
        let bytes = match kind_of(sequence) {
            Kind::Base => {
                SnapshotBytes::read_unvalidated(&self.dir.join(file_name(BASE_SEQUENCE)))?
                    .with_sequence(sequence)
            }
            Kind::Alternate if sequence <= BASE_SEQUENCE + 1 => {
                let base = Snapshot::open(&self.dir.join(file_name(BASE_SEQUENCE)))?;
                let (bytes, changed) = build_alternate(&base, sequence)?;
                self.flipped_certs = changed;
                bytes
            }
            Kind::Alternate => {
                // The previous alternate file: read, removed, then written anew, so the
                // directory never holds four files.
                let prev = self.dir.join(file_name(sequence - 2));
                let bytes = SnapshotBytes::read_unvalidated(&prev)?;
                std::fs::remove_file(&prev).map_err(io_err(&prev))?;
                bytes.with_sequence(sequence)
            }
        };
        let path = self.dir.join(next_name(sequence));
        write_plain(&bytes, &path)?;
        Ok(bytes.len() as u64)
    }

    /// Puts the prepared snapshot of `sequence` in place as `snap-<sequence>.ccc`, for the
    /// gateway to load.
    pub fn place(&self, sequence: u64) -> Result<(), EmbeddedError> {
        let from = self.dir.join(next_name(sequence));
        let to = self.dir.join(file_name(sequence));
        std::fs::rename(&from, &to).map_err(io_err(&to))
    }

    /// After `sequence` is in force: removes `sequence - 1` if nothing needs it any more
    /// (a base-kind file other than the base; an alternate one is the source of the next
    /// alternate and is removed when that is prepared).
    pub fn retire(&self, sequence: u64) -> Result<(), EmbeddedError> {
        let old = sequence.saturating_sub(1);
        if old > BASE_SEQUENCE && kind_of(old) == Kind::Base {
            let path = self.dir.join(file_name(old));
            std::fs::remove_file(&path).map_err(io_err(&path))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cccgate_core::{Listing, Policy, check};
    use cccgate_synth::{ListingGenerator, Profile, RegisterSpec};

    use crate::embedded::register_snapshot;

    #[test]
    fn alternate_snapshots_give_exactly_the_reasons_expected_of_them() {
        let spec = RegisterSpec {
            certs: 3_000,
            seed: 4,
            ..RegisterSpec::default()
        };
        let register = spec.generate();
        let mut generator = ListingGenerator::new(&register, Profile::Y2025, 3);
        let cache = tempfile::tempdir().unwrap();
        let dir = register_snapshot(&spec, register, cache.path()).unwrap();
        let base = Snapshot::open(&dir.join(file_name(1))).unwrap();
        let (bytes, changed) = build_alternate(&base, 2).unwrap();
        let alt = Snapshot::from_bytes(bytes).unwrap();
        assert!(changed > 100, "{changed} certificates flipped");
        let policy = Policy::default();
        let mut listing = cccgate_synth::GeneratedListing::default();
        let (mut differ, mut n) = (0, 0);
        for _ in 0..20_000 {
            generator.fill(&mut listing);
            let e = &listing.event;
            let day = generator.as_of();
            let Ok(l) = Listing::parse(
                &e.listing_id,
                &e.merchant_id,
                &e.product_code,
                &e.certificate_number,
                &e.model,
                &e.event_time,
                day,
            ) else {
                continue;
            };
            n += 1;
            let number = CertNumber::normalize(&e.certificate_number)
                .ok()
                .map(|p| p.number);
            let on_base = check(&base, &l, &policy).reason;
            assert_eq!(on_base, listing.expected);
            let want = expected_on(Kind::Alternate, on_base, number);
            assert_eq!(check(&alt, &l, &policy).reason, want, "{e:?}");
            assert_eq!(expected_on(Kind::Base, on_base, number), on_base);
            differ += u64::from(want != on_base);
        }
        // Enough listings change between the two to catch a torn swap.
        assert!(n > 19_000 && differ * 50 > n, "{differ} of {n} differ");
    }

    #[test]
    fn a_ring_of_swaps_never_holds_more_than_three_snapshots_and_leaves_only_the_base() {
        let spec = RegisterSpec {
            certs: 500,
            seed: 2,
            ..RegisterSpec::default()
        };
        let cache = tempfile::tempdir().unwrap();
        let dir = register_snapshot(&spec, spec.generate(), cache.path()).unwrap();
        // What an older version left behind.
        std::fs::create_dir_all(dir.join("staging")).unwrap();
        std::fs::write(dir.join("staging").join(file_name(5)), b"x").unwrap();
        std::fs::write(dir.join(".snap-7.ccc.next"), b"x").unwrap();
        let mut ring = SwapRing::new(&dir).unwrap();
        let count = || crate::soak::disk_usage(&dir, 2);
        assert_eq!(count().1, 1);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        let mut contents = std::collections::HashSet::new();
        for seq in 2..=12 {
            ring.prepare(seq).unwrap();
            // Base, in force, prepared.
            assert!(std::fs::read_dir(&dir).unwrap().count() <= 3);
            ring.place(seq).unwrap();
            let s = Snapshot::open(&dir.join(file_name(seq))).unwrap();
            assert_eq!(s.sequence(), seq);
            let revoked = s.counts().of(Status::Revoked);
            contents.insert((kind_of(seq), revoked));
            ring.retire(seq).unwrap();
            assert!(count().1 <= 3);
        }
        // Two registers, each always the same.
        assert_eq!(contents.len(), 2, "{contents:?}");
        assert!(ring.flipped_certs > 0);
        ring.clean().unwrap();
        assert_eq!(count().1, 1);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    }
}
