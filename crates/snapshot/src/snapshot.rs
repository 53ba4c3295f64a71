//! Opening a snapshot and reading it in place.

use std::fs::File;
use std::path::Path;

use cccgate_core::{
    Catalogue, CatalogueEntry, CertFacts, CertNumber, CertificateRecord, ConformityMode, Day,
    ModelKey, ProductCode, Register, Status, split_models,
};
use memmap2::Mmap;
use rkyv::rancor::BoxedError;
use rkyv::util::AlignedVec;

use crate::data::{
    ArchivedData, ArchivedHot, Cold, KEYS_OVERFLOW, NO_DAY, home_slot, overflow_run,
};
use crate::error::SnapshotError;
use crate::format::{HEADER_LEN, Header, SnapshotBytes, checksum};

/// The bytes behind a snapshot: a read-only mapping of its file, or an archive in memory.
#[derive(Debug)]
enum Backing {
    /// The file itself, mapped: zero-copy, shared with the page cache.
    Mapped(Mmap),
    /// The archive copied into anonymous memory backed by huge pages where the kernel allows.
    Anonymous(Mmap),
    Owned(AlignedVec<16>),
}

/// One catalogue period, compact, for the hot path's lookup by code and day.
#[derive(Clone, Copy, Debug)]
struct Period {
    code: u16,
    mode: ConformityMode,
    from: i32,
    until: i32,
}

/// Certificate counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// All certificates.
    pub total: u64,
    /// By status, index `Status::code() - 1`.
    pub by_status: [u64; 5],
}

impl Counts {
    /// Certificates with status `有效`.
    pub fn valid(&self) -> u64 {
        self.by_status[0]
    }

    /// Certificates with this status.
    pub fn of(&self, status: Status) -> u64 {
        self.by_status[usize::from(status.code() - 1)]
    }
}

/// A certificate's key facts, for listings and diffs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CertSummary {
    /// Its number.
    pub number: CertNumber,
    /// Its status.
    pub status: Status,
    /// The product code it covers.
    pub product_code: ProductCode,
    /// Its expiry date.
    pub expires: Day,
}

/// An open, verified snapshot. Cheap to share behind an `Arc`; every read is in place.
#[derive(Debug)]
pub struct Snapshot {
    backing: Backing,
    sequence: u64,
    built_at_unix_ms: i64,
    content_id: String,
    periods: Vec<Period>,
    /// For each product code 0..=9999, the index of its first period in `periods` (the
    /// periods of a code are contiguous): a catalogue look-up is one read, not a binary search.
    first_period: Box<[u32]>,
}

impl Snapshot {
    /// Maps a snapshot file and verifies it: length, format version, checksum, then a full
    /// validation of the archive. A file that fails any of them is refused, never served.
    pub fn open(path: &Path) -> Result<Snapshot, SnapshotError> {
        let io = |source| SnapshotError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len < HEADER_LEN as u64 {
            let mut head = Vec::new();
            std::io::Read::read_to_end(&mut &file, &mut head).map_err(io)?;
            return Header::decode(&head, len, path).and(Err(SnapshotError::Length {
                path: path.to_path_buf(),
                expected: HEADER_LEN as u64,
                actual: len,
            }));
        }
        // SAFETY: the mapping is read-only and snapshot files are never modified in place
        // (`write_atomic` writes a new file and renames it), so the bytes cannot change under us.
        #[allow(unsafe_code)]
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        let header = Header::decode(&map, len, path)?;
        Self::verify(Backing::Mapped(map), header, path)
    }

    /// Opens the snapshot at `path`, or, when it is missing or refused, builds it with `build`,
    /// writes it atomically there and opens that. For caches of expensive snapshots
    /// (benchmarks, fixtures): a damaged cache file is rebuilt, never served.
    pub fn open_or_build(
        path: &Path,
        build: impl FnOnce() -> Result<SnapshotBytes, SnapshotError>,
    ) -> Result<Snapshot, SnapshotError> {
        match Snapshot::open(path) {
            Ok(s) => Ok(s),
            Err(_) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|source| SnapshotError::Io {
                        path: dir.to_path_buf(),
                        source,
                    })?;
                }
                crate::format::write_atomic(&build()?, path)?;
                Snapshot::open(path)
            }
        }
    }

    /// Verifies a snapshot built in memory (the embedded sample register, tests, benchmarks).
    pub fn from_bytes(bytes: SnapshotBytes) -> Result<Snapshot, SnapshotError> {
        let path = Path::new("<memory>");
        let header = Header::decode(&bytes.header, bytes.len() as u64, path)?;
        Self::verify(Backing::Owned(bytes.archive), header, path)
    }

    /// Reads a snapshot file into anonymous memory that asks the kernel for transparent huge
    /// pages, then verifies it like [`Snapshot::open`]. Random lookups over a register of a few
    /// hundred MB then miss the TLB far less often than over 4 KiB pages of a file mapping;
    /// this is how the gateway loads snapshots. Costs one copy of the file at load time.
    pub fn load(path: &Path) -> Result<Snapshot, SnapshotError> {
        use std::io::Read;
        let io = |source| SnapshotError::Io {
            path: path.to_path_buf(),
            source,
        };
        let (mut file, header, archive_len) = Self::open_header(path)?;
        let mut anon = memmap2::MmapOptions::new()
            .len(archive_len.max(1))
            .map_anon()
            .map_err(io)?;
        // Advisory: without THP the copy still works, on 4 KiB pages.
        #[cfg(target_os = "linux")]
        let _ = anon.advise(memmap2::Advice::HugePage);
        file.read_exact(&mut anon[..archive_len]).map_err(io)?;
        let map = anon.make_read_only().map_err(io)?;
        Self::verify(Backing::Anonymous(map), header, path)
    }

    /// Opens `path` and decodes its header, leaving the file at the archive's first byte;
    /// returns the file, the header and the archive's length (for the copying loads).
    fn open_header(path: &Path) -> Result<(File, Header, usize), SnapshotError> {
        let io = |source| SnapshotError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let mut head = [0u8; HEADER_LEN];
        let got = read_up_to(&mut file, &mut head).map_err(io)?;
        let header = Header::decode(&head[..got], len, path)?;
        let archive_len =
            usize::try_from(header.archive_len).map_err(|_| SnapshotError::Length {
                path: path.to_path_buf(),
                expected: header.archive_len,
                actual: len,
            })?;
        Ok((file, header, archive_len))
    }

    /// Reads a snapshot file fully into memory instead of mapping it (one copy, straight
    /// into the aligned buffer the archive needs).
    pub fn read(path: &Path) -> Result<Snapshot, SnapshotError> {
        use std::io::Read;
        let io = |source| SnapshotError::Io {
            path: path.to_path_buf(),
            source,
        };
        let (mut file, header, archive_len) = Self::open_header(path)?;
        let mut archive = AlignedVec::<16>::with_capacity(archive_len);
        archive.resize(archive_len, 0);
        file.read_exact(&mut archive).map_err(io)?;
        Self::verify(Backing::Owned(archive), header, path)
    }

    fn verify(backing: Backing, header: Header, path: &Path) -> Result<Snapshot, SnapshotError> {
        let archive = archive_of(&backing);
        let sum = checksum(archive);
        if sum != header.checksum {
            return Err(SnapshotError::Checksum {
                path: path.to_path_buf(),
            });
        }
        let invalid = |message: String| SnapshotError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let data = rkyv::access::<ArchivedData, BoxedError>(archive)
            .map_err(|e| invalid(e.to_string()))?;
        if data.sequence.to_native() != header.sequence {
            return Err(invalid(format!(
                "header says sequence {}, archive says {}",
                header.sequence,
                data.sequence.to_native()
            )));
        }
        let mut periods = Vec::with_capacity(data.catalogue.len());
        for row in data.catalogue.iter() {
            let mode = match row.mode {
                0 => ConformityMode::Certificate,
                1 => ConformityMode::SelfDeclaration,
                m => return Err(invalid(format!("catalogue mode {m}"))),
            };
            periods.push(Period {
                code: row.code.to_native(),
                mode,
                from: row.from.to_native(),
                until: row.until.to_native(),
            });
        }
        if !periods.is_sorted_by_key(|p| (p.code, p.from)) {
            return Err(invalid("catalogue is not sorted".into()));
        }
        let first_period = (0..=9999u16)
            .map(|code| periods.partition_point(|p| p.code < code) as u32)
            .collect();
        let sequence = header.sequence;
        Ok(Snapshot {
            backing,
            sequence,
            built_at_unix_ms: header.built_at_unix_ms,
            content_id: format!("{sum:032x}"),
            periods,
            first_period,
        })
    }

    /// The archive, validated at construction.
    #[inline]
    pub(crate) fn data(&self) -> &ArchivedData {
        // SAFETY: `verify` ran `rkyv::access` (full bytecheck validation) over exactly these
        // bytes before this `Snapshot` existed, and the bytes are immutable for its lifetime.
        #[allow(unsafe_code)]
        unsafe {
            rkyv::access_unchecked::<ArchivedData>(archive_of(&self.backing))
        }
    }

    /// The feed sequence.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// The archive: every byte after the header, verified at open (what is served).
    pub fn archive(&self) -> &[u8] {
        archive_of(&self.backing)
    }

    /// The content id: the xxh3-128 checksum of the archive, 32 hex digits.
    pub fn content_id(&self) -> &str {
        &self.content_id
    }

    /// Who published the feed.
    pub fn source(&self) -> &str {
        self.data().source.as_str()
    }

    /// The drop's `generated_at`.
    pub fn generated_at(&self) -> &str {
        self.data().generated_at.as_str()
    }

    /// When the snapshot was built, milliseconds since the Unix epoch.
    pub fn built_at_unix_ms(&self) -> i64 {
        self.built_at_unix_ms
    }

    /// The same register under another feed sequence, as the bytes of a file: the same
    /// certificates, catalogue and metadata as `SnapshotBuilder::from_snapshot(self, ..)` with
    /// that sequence and no change would give, without rebuilding. The archive is copied
    /// (patched in place when the snapshot was read into memory with [`Snapshot::read`]), the
    /// archived sequence rewritten and the checksum computed again, so the result is a fresh
    /// snapshot with its own content id that opens and verifies like any other. For making
    /// many snapshots of one register cheaply: the swap benchmark publishes one every half
    /// second.
    pub fn with_sequence(self, sequence: u64) -> SnapshotBytes {
        let header = Header {
            version: crate::format::FORMAT_VERSION,
            archive_len: archive_of(&self.backing).len() as u64,
            checksum: 0,
            sequence: self.sequence,
            built_at_unix_ms: self.built_at_unix_ms,
        };
        let archive = match self.backing {
            Backing::Owned(v) => v,
            backing => {
                let src = archive_of(&backing);
                let mut v = AlignedVec::<16>::with_capacity(src.len());
                v.extend_from_slice(src);
                v
            }
        };
        SnapshotBytes {
            header: header.encode(),
            archive,
        }
        .with_sequence(sequence)
    }

    /// Size of the snapshot file (header and archive).
    pub fn byte_len(&self) -> usize {
        HEADER_LEN + archive_of(&self.backing).len()
    }

    /// Bytes taken by each table of the archive (payload only, without rkyv's small
    /// headers), for `inspect` and for sizing.
    pub fn table_bytes(&self) -> [(&'static str, usize); 6] {
        let d = self.data();
        let strings = |t: &[rkyv::string::ArchivedString]| -> usize {
            t.iter()
                .map(|n| 8 + if n.len() > 8 { n.len() } else { 0 })
                .sum()
        };
        [
            ("slots", d.slots.len() * std::mem::size_of::<ArchivedHot>()),
            (
                "cold",
                d.cold.len() * std::mem::size_of::<crate::data::ArchivedCold>(),
            ),
            ("overflow_keys", d.overflow_keys.len() * 8),
            ("model_text", d.model_text.len()),
            ("producers", strings(&d.producers)),
            ("names", strings(&d.names)),
        ]
    }

    /// Certificate counts.
    pub fn counts(&self) -> Counts {
        let d = self.data();
        Counts {
            total: d.total.to_native(),
            by_status: d.counts.map(|c| c.to_native()),
        }
    }

    /// The catalogue, as an owned copy.
    pub fn catalogue(&self) -> Catalogue {
        let entries = self
            .data()
            .catalogue
            .iter()
            .filter_map(|r| {
                Some(CatalogueEntry {
                    code: ProductCode::new(r.code.to_native())?,
                    name: r.name.as_str().to_owned(),
                    category_code: r.category_code,
                    category_name: r.category_name.as_str().to_owned(),
                    mode: if r.mode == 0 {
                        ConformityMode::Certificate
                    } else {
                        ConformityMode::SelfDeclaration
                    },
                    from: Day::from_days(r.from.to_native()),
                    until: day_opt(r.until.to_native()),
                })
            })
            .collect();
        // The entries were a valid catalogue when built; rebuild without re-checking overlaps.
        Catalogue::new(entries).unwrap_or_default()
    }

    /// The slot of a certificate in the table.
    #[inline]
    fn slot(&self, number: u64) -> Option<u32> {
        let slots = self.data().slots.as_slice();
        if number == 0 || slots.is_empty() {
            return None;
        }
        let mut i = home_slot(number, slots.len());
        // Bounded even on a table with no empty slot.
        for _ in 0..slots.len() {
            let k = slots[i].number.to_native();
            if k == number {
                return Some(i as u32);
            }
            if k == 0 {
                return None;
            }
            i = if i + 1 == slots.len() { 0 } else { i + 1 };
        }
        None
    }

    #[inline]
    fn hot(&self, slot: u32) -> &ArchivedHot {
        &self.data().slots.as_slice()[slot as usize]
    }

    #[inline]
    fn producer(&self, h: &ArchivedHot) -> &str {
        self.data()
            .producers
            .get(h.producer.to_native() as usize)
            .map_or("", |s| s.as_str())
    }

    #[inline]
    fn text(&self, id: u32) -> &str {
        self.data()
            .names
            .get(id as usize)
            .map_or("", |s| s.as_str())
    }

    fn model_text(&self, c: &Cold) -> &str {
        let start = c.text_start as usize;
        self.data()
            .model_text
            .get(start..start + c.text_len as usize)
            .unwrap_or_default()
    }

    /// Every certificate's key facts, in table order.
    pub fn iter(&self) -> impl Iterator<Item = CertSummary> + '_ {
        self.occupied().map(summary)
    }

    fn occupied(&self) -> impl Iterator<Item = &ArchivedHot> + '_ {
        self.data()
            .slots
            .iter()
            .filter(|h| h.number.to_native() != 0)
    }

    /// The full record of a certificate.
    pub fn record(&self, number: CertNumber) -> Option<CertificateRecord> {
        self.slot(number.get()).map(|s| self.record_at(self.hot(s)))
    }

    /// Every certificate's full record, in table order.
    pub fn records(&self) -> impl Iterator<Item = CertificateRecord> + '_ {
        self.occupied().map(|h| self.record_at(h))
    }

    fn record_at(&self, h: &ArchivedHot) -> CertificateRecord {
        let s = summary(h);
        let c: Cold = self
            .data()
            .cold
            .get(h.cold.to_native() as usize)
            .and_then(|c| rkyv::deserialize::<Cold, BoxedError>(c).ok())
            .unwrap_or_default();
        CertificateRecord {
            number: s.number,
            suffix: (c.suffix != [0, 0]).then_some(c.suffix),
            status: s.status,
            product_code: s.product_code,
            product_name: self.text(c.product_name).to_owned(),
            models: split_models(self.model_text(&c))
                .map(str::to_owned)
                .collect(),
            applicant: self.text(c.applicant).to_owned(),
            producer: self.producer(h).to_owned(),
            factory: self.text(c.factory).to_owned(),
            issued: Day::from_days(c.issued),
            expires: s.expires,
            status_changed: day_opt(c.status_changed),
            status_reason: self.text(c.status_reason).to_owned(),
            body_name: self.text(c.body_name).to_owned(),
        }
    }
}

fn summary(h: &ArchivedHot) -> CertSummary {
    CertSummary {
        number: CertNumber::from_u64(h.number.to_native()).unwrap_or(CertNumber::ZERO),
        status: Status::from_code(h.status).unwrap_or(Status::Expired),
        product_code: ProductCode::new(h.product_code.to_native()).unwrap_or(ProductCode::ZERO),
        expires: Day::from_days(h.expires.to_native()),
    }
}

impl SnapshotBytes {
    /// Reads a snapshot file whole, checking its header and the archive's checksum but not
    /// validating the archive's structure (that is [`Snapshot::read`], which costs a pass
    /// over every table). For producers that republish a file they made themselves under
    /// another sequence ([`SnapshotBytes::with_sequence`]): whoever serves the result opens
    /// it with the full verification, as always.
    pub fn read_unvalidated(path: &Path) -> Result<SnapshotBytes, SnapshotError> {
        use std::io::Read;
        let (mut file, header, archive_len) = Snapshot::open_header(path)?;
        if archive_len < std::mem::size_of::<ArchivedData>() {
            return Err(SnapshotError::Invalid {
                path: path.to_path_buf(),
                message: format!("archive of {archive_len} bytes is too short for a register"),
            });
        }
        let mut archive = AlignedVec::<16>::with_capacity(archive_len);
        archive.resize(archive_len, 0);
        file.read_exact(&mut archive)
            .map_err(|source| SnapshotError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        if checksum(&archive) != header.checksum {
            return Err(SnapshotError::Checksum {
                path: path.to_path_buf(),
            });
        }
        Ok(SnapshotBytes {
            header: header.encode(),
            archive,
        })
    }

    /// The same archive under another feed sequence: the archived sequence rewritten in
    /// place (the root of an rkyv archive sits at its end, so the field is at a fixed
    /// distance from the end whatever the register), the checksum computed again and a new
    /// header, keeping the build time. The result is a fresh snapshot with its own content id
    /// that opens and verifies like any other; no rebuild, one pass of the checksum.
    pub fn with_sequence(mut self, sequence: u64) -> SnapshotBytes {
        let at = rkyv::api::root_position::<ArchivedData>(self.archive.len())
            + std::mem::offset_of!(ArchivedData, sequence);
        // rkyv's `little_endian` feature is pinned in the workspace.
        self.archive[at..at + 8].copy_from_slice(&sequence.to_le_bytes());
        let built_at_unix_ms =
            i64::from_le_bytes(self.header[48..56].try_into().unwrap_or_default());
        let header = Header {
            version: crate::format::FORMAT_VERSION,
            archive_len: self.archive.len() as u64,
            checksum: checksum(&self.archive),
            sequence,
            built_at_unix_ms,
        };
        self.header = header.encode();
        self
    }
}

/// Reads into `buf` until it is full or the reader ends; returns how much was read.
fn read_up_to(r: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Asks the CPU to bring the cache line holding `p` closer (a hint: any address will do).
/// Also used by the watched-listing registry, whose passes read scattered slots.
#[inline(always)]
pub fn prefetch_line(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint: it never faults, whatever the address, and writes
    // nothing.
    #[allow(unsafe_code)]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

fn day_opt(days: i32) -> Option<Day> {
    (days != NO_DAY).then(|| Day::from_days(days))
}

#[inline]
fn archive_of(backing: &Backing) -> &[u8] {
    match backing {
        Backing::Mapped(map) => &map[HEADER_LEN..],
        Backing::Anonymous(map) => map,
        Backing::Owned(v) => v,
    }
}

impl Register for Snapshot {
    type Cert = u32;

    /// Starts fetching the certificate's home slot and the three after it: the cache lines
    /// that hold those four slots (three when the home slot starts a line, else four). With
    /// linear probing at a load factor of 0.8 a hit reads three slots on average, often across
    /// a line boundary, so fetching only the home record's lines left the probe to wait for
    /// the next line. (Four lines from the home slot's address, as before, fetched a fifth
    /// slot's line a quarter of the time for nothing: a fetch that costs more than it saves
    /// when every line of a chunk is in flight at once.)
    #[inline]
    fn prefetch(&self, number: CertNumber) {
        const PROBE: usize = 4 * std::mem::size_of::<ArchivedHot>();
        let slots = self.data().slots.as_slice();
        if let Some(slot) = slots.get(home_slot(number.get(), slots.len())) {
            let p = (slot as *const ArchivedHot).cast::<u8>();
            let first = p.wrapping_sub(p as usize % 64);
            let lines = (p as usize % 64 + PROBE).div_ceil(64);
            for line in 0..lines {
                prefetch_line(first.wrapping_add(64 * line));
            }
        }
    }

    /// Starts fetching what a verdict reads beyond the record (found a few listings after
    /// its slot was prefetched): its producer's entry and, for a certificate with more models
    /// than the record holds, its model keys.
    #[inline]
    fn prefetch_cert(&self, slot: u32) {
        let h = self.hot(slot);
        let d = self.data();
        if let Some(p) = d.producers.as_slice().get(h.producer.to_native() as usize) {
            prefetch_line((p as *const rkyv::string::ArchivedString).cast());
        }
        if h.inline == KEYS_OVERFLOW {
            let (start, _) = overflow_run(h.keys[0].to_native());
            if let Some(k) = d.overflow_keys.as_slice().get(start) {
                prefetch_line((k as *const rkyv::rend::u64_le).cast());
            }
        }
    }

    #[inline]
    fn sequence(&self) -> u64 {
        self.sequence
    }

    #[inline]
    fn catalogue_mode(&self, code: ProductCode, day: Day) -> Option<ConformityMode> {
        let (code, day) = (code.get(), day.days());
        let start = self
            .first_period
            .get(usize::from(code))
            .map_or(self.periods.len(), |&i| i as usize);
        self.periods
            .get(start..)
            .unwrap_or_default()
            .iter()
            .take_while(|p| p.code == code)
            .find(|p| p.from <= day && (p.until == NO_DAY || day < p.until))
            .map(|p| p.mode)
    }

    #[inline]
    fn find(&self, number: CertNumber) -> Option<u32> {
        self.slot(number.get())
    }

    #[inline]
    fn facts(&self, cert: u32) -> CertFacts<'_> {
        let h = self.hot(cert);
        let s = summary(h);
        CertFacts {
            number: s.number,
            status: s.status,
            product_code: s.product_code,
            producer: self.producer(h),
            expires: s.expires,
        }
    }

    #[inline]
    fn covers_model(&self, cert: u32, model: ModelKey) -> bool {
        let h = self.hot(cert);
        if h.inline == KEYS_OVERFLOW {
            let (start, len) = overflow_run(h.keys[0].to_native());
            self.data()
                .overflow_keys
                .get(start..start + len)
                .is_some_and(|keys| {
                    keys.binary_search_by(|k| k.to_native().cmp(&model.0))
                        .is_ok()
                })
        } else {
            // At most three keys in the record: compared in turn, without the mispredicted
            // branches of a binary search.
            h.keys
                .get(..usize::from(h.inline))
                .is_some_and(|keys| keys.iter().any(|k| k.to_native() == model.0))
        }
    }
}
