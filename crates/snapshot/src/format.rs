//! The file format: a 64-byte header followed by the rkyv archive; atomic writes.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rkyv::util::AlignedVec;

use crate::error::SnapshotError;

/// Magic bytes at the start of every snapshot file.
pub(crate) const MAGIC: [u8; 8] = *b"CCCGSNAP";
/// The format version this build writes and reads. Bump it on any change to `data.rs`.
pub const FORMAT_VERSION: u32 = 6;
/// Length of the header; the archive starts here, a multiple of 16.
pub const HEADER_LEN: usize = 64;

/// The decoded header. Every byte of it is covered by its own checksum (bytes 56..64), the
/// archive by `checksum`; the build time lives here, outside the archive, so the content id
/// (the archive's checksum) depends on the register and not on when it was built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub version: u32,
    pub archive_len: u64,
    pub checksum: u128,
    pub sequence: u64,
    pub built_at_unix_ms: i64,
}

impl Header {
    pub(crate) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..8].copy_from_slice(&MAGIC);
        h[8..12].copy_from_slice(&self.version.to_le_bytes());
        h[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
        h[16..24].copy_from_slice(&self.archive_len.to_le_bytes());
        h[24..40].copy_from_slice(&self.checksum.to_le_bytes());
        h[40..48].copy_from_slice(&self.sequence.to_le_bytes());
        h[48..56].copy_from_slice(&self.built_at_unix_ms.to_le_bytes());
        let sum = xxhash_rust::xxh3::xxh3_64(&h[..56]);
        h[56..64].copy_from_slice(&sum.to_le_bytes());
        h
    }

    /// Decodes and checks the header of a file of `file_len` bytes.
    pub(crate) fn decode(
        bytes: &[u8],
        file_len: u64,
        path: &Path,
    ) -> Result<Header, SnapshotError> {
        let path = || path.to_path_buf();
        if bytes.len() < HEADER_LEN {
            if bytes.len() >= 8 && bytes[0..8] != MAGIC {
                return Err(SnapshotError::BadMagic { path: path() });
            }
            return Err(SnapshotError::Length {
                path: path(),
                expected: HEADER_LEN as u64,
                actual: file_len,
            });
        }
        if bytes[0..8] != MAGIC {
            return Err(SnapshotError::BadMagic { path: path() });
        }
        let u32_at =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[i..i + 8]);
            u64::from_le_bytes(b)
        };
        let version = u32_at(8);
        if version != FORMAT_VERSION || u32_at(12) as usize != HEADER_LEN {
            return Err(SnapshotError::Version {
                path: path(),
                found: version,
                expected: FORMAT_VERSION,
            });
        }
        if xxhash_rust::xxh3::xxh3_64(&bytes[..56]) != u64_at(56) {
            return Err(SnapshotError::Checksum { path: path() });
        }
        let archive_len = u64_at(16);
        let mut c = [0u8; 16];
        c.copy_from_slice(&bytes[24..40]);
        let header = Header {
            version,
            archive_len,
            checksum: u128::from_le_bytes(c),
            sequence: u64_at(40),
            built_at_unix_ms: u64_at(48) as i64,
        };
        let expected = archive_len.saturating_add(HEADER_LEN as u64);
        if expected != file_len {
            return Err(SnapshotError::Length {
                path: path(),
                expected,
                actual: file_len,
            });
        }
        Ok(header)
    }
}

/// The xxh3-128 checksum of an archive; its hex form is the snapshot's content id.
pub(crate) fn checksum(archive: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(archive)
}

/// A built snapshot in memory: the header and the archive, ready to write or to serve.
#[derive(Debug)]
pub struct SnapshotBytes {
    pub(crate) header: [u8; HEADER_LEN],
    pub(crate) archive: AlignedVec<16>,
}

impl SnapshotBytes {
    /// Total length of the file these bytes make.
    pub fn len(&self) -> usize {
        HEADER_LEN + self.archive.len()
    }

    /// Whether there is nothing (never true for a built snapshot).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The archive: every byte after the header, the bytes a gateway serves.
    pub fn archive(&self) -> &[u8] {
        &self.archive
    }

    /// The sequence and the content id (xxh3-128 of the archive, 32 hex digits) the header
    /// holds, as [`crate::Snapshot::sequence`] and [`crate::Snapshot::content_id`] will say.
    pub fn identity(&self) -> (u64, String) {
        let h = &self.header;
        let sequence = u64::from_le_bytes(h[40..48].try_into().unwrap_or_default());
        let sum = u128::from_le_bytes(h[24..40].try_into().unwrap_or_default());
        (sequence, format!("{sum:032x}"))
    }

    /// The sequence the header carries.
    pub fn sequence(&self) -> u64 {
        self.identity().0
    }

    /// Writes the file's bytes, header then archive, to `w`, without copying them first.
    /// Not atomic and not synced: for files nobody serves yet (see [`write_atomic`]).
    pub fn write_to(&self, w: &mut impl Write) -> std::io::Result<()> {
        w.write_all(&self.header)?;
        w.write_all(&self.archive)
    }

    /// The file's bytes, header then archive (copies; for tests and tools).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len());
        v.extend_from_slice(&self.header);
        v.extend_from_slice(&self.archive);
        v
    }
}

/// The file name of the snapshot of a sequence: `snap-<sequence>.ccc`.
pub fn file_name(sequence: u64) -> String {
    format!("snap-{sequence}.ccc")
}

/// The file name of the rows set aside while building the snapshot of a sequence:
/// `reject-<sequence>.csv`.
pub fn reject_file_name(sequence: u64) -> String {
    format!("reject-{sequence}.csv")
}

/// The sequence in a snapshot file name, if it is one.
pub fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("snap-")?.strip_suffix(".ccc")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Marks the temporary files [`write_file_atomic`] creates: `.<name>.tmp-<unique>`.
pub(crate) const TEMP_MARK: &str = ".tmp-";

/// Writes a snapshot to `path` atomically: a temporary file in the same directory, synced,
/// then renamed over `path`, then the directory synced. A reader never sees a partial file,
/// and a file already mapped by a reader is replaced, never rewritten.
pub fn write_atomic(bytes: &SnapshotBytes, path: &Path) -> Result<(), SnapshotError> {
    write_file_atomic(path, &[&bytes.header, &bytes.archive])
}

/// Writes `parts`, one after the other, to `path` atomically (see [`write_atomic`]). The
/// temporary file's name is unique to this write (process, a counter, the clock) and it is
/// created exclusively, so two writers of the same file, in one process or several, never
/// write into the same temporary file; the last rename wins whole.
///
/// A `path` that is there and is neither a regular file nor a directory (`/dev/null`, a FIFO,
/// a terminal: `report --out /dev/null`) is written straight into, never renamed over: a
/// rename would replace the device itself with a regular file, for every process of the
/// machine.
pub fn write_file_atomic(path: &Path, parts: &[&[u8]]) -> Result<(), SnapshotError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| SnapshotError::Io { path: p, source }
    };
    if let Ok(meta) = fs::metadata(path)
        && !meta.is_file()
        && !meta.is_dir()
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io(path))?;
        for part in parts {
            f.write_all(part).map_err(io(path))?;
        }
        return f.flush().map_err(io(path));
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let (tmp, f) = create_temp(dir, path).map_err(io(dir))?;
    let result = (|| {
        write_and_sync(&f, parts, WRITEBACK_PIECE).map_err(io(&tmp))?;
        drop(f);
        fs::rename(&tmp, path).map_err(io(path))?;
        // Make the rename itself durable.
        File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Files larger than two of these are written in pieces of this size, each flushed to disk
/// on a helper thread while the next is copied, so the `fsync` at the end has little left to
/// wait for (a full-scale snapshot is ~195 MB: its `fsync` alone took 0.1-0.2 s after the
/// write).
const WRITEBACK_PIECE: usize = 32 << 20;

/// Whether this process writes large files through shared mappings ([`write_through_mappings`]).
static MAPPED_WRITES: AtomicBool = AtomicBool::new(false);

/// Lets this process write files larger than two pieces (64 MiB: a full-scale snapshot)
/// through shared mappings of blocks reserved with `fallocate` rather than by `write`: about
/// half the time to fill fresh page cache on the VMs measured (benches/README.md, "Names and
/// numbers prefetched, the snapshot written through a mapping").
///
/// Off by default, and only for short-lived tools (`cccgate load`): while a file is mapped,
/// another process truncating it (an operator's mistake, a tool on a shared volume) would
/// kill the writing process with SIGBUS. The gateway, which reloads and publishes snapshots
/// while it serves, never turns it on: it keeps no mapping of any file another process can
/// change (issue #9).
pub fn write_through_mappings(on: bool) {
    MAPPED_WRITES.store(on, Ordering::Relaxed);
}

/// Writes `parts` to `f` one after the other and syncs it (`fsync`); when they are larger
/// than two `piece`s, written piece by piece with the pieces written so far flushed on a
/// helper thread meanwhile. The file is only as durable as the final `fsync` says, as before.
fn write_and_sync(f: &File, parts: &[&[u8]], piece: usize) -> std::io::Result<()> {
    write_and_sync_as(f, parts, piece, MAPPED_WRITES.load(Ordering::Relaxed))
}

/// [`write_and_sync`], through shared mappings when `mapped` and the blocks can be reserved.
fn write_and_sync_as(f: &File, parts: &[&[u8]], piece: usize, mapped: bool) -> std::io::Result<()> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = f;
    if total <= 2 * piece {
        for part in parts {
            out.write_all(part)?;
        }
        return f.sync_all();
    }
    if mapped && reserve(f, total)? {
        return write_mapped_and_sync(f, parts, total, piece);
    }
    write_chunked_and_sync(f, parts, piece)
}

/// As [`write_and_sync`] where no blocks could be reserved: `write`s piece by piece.
fn write_chunked_and_sync(f: &File, parts: &[&[u8]], piece: usize) -> std::io::Result<()> {
    let mut out = f;
    write_flushing(f, |flush| {
        for part in parts {
            for chunk in part.chunks(piece) {
                out.write_all(chunk)?;
                flush();
            }
        }
        Ok(())
    })
}

/// Runs `write` with a `flush` that asks a helper thread to flush what `f` holds so far
/// (`fdatasync`; a flush already asked for covers what was written since), then syncs `f`.
fn write_flushing(
    f: &File,
    write: impl FnOnce(&dyn Fn()) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let syncer = f.try_clone()?;
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
        let helper = scope.spawn(move || -> std::io::Result<()> {
            while rx.recv().is_ok() {
                syncer.sync_data()?;
            }
            Ok(())
        });
        let written = write(&|| {
            let _ = tx.try_send(());
        });
        drop(tx);
        let flushed = helper
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the flushing thread panicked")));
        written?;
        flushed?;
        f.sync_all()
    })
}

/// Reserves the blocks of a file of `len` bytes (`fallocate`; its length becomes `len`), so a
/// full disk is an error here and not a fault while the file is written through a mapping.
/// `false`: the file system cannot reserve them (or this is not Linux): write it the usual way.
fn reserve(f: &File, len: usize) -> std::io::Result<bool> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let len = libc::off_t::try_from(len).map_err(std::io::Error::other)?;
        // SAFETY: `fallocate` on an open descriptor of ours; it touches no memory of ours.
        #[allow(unsafe_code)]
        let r = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, len) };
        if r == 0 {
            return Ok(true);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL) => Ok(false),
            _ => Err(e),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (f, len);
        Ok(false)
    }
}

/// As [`write_and_sync`] for a file whose `total` bytes [`reserve`] reserved: each piece is
/// copied into a shared mapping of its part of the file rather than `write`n (on this VM's
/// ext4, filling 195 MB of fresh page cache took 0.3-0.4 s through a mapping against 0.6-1.0 s
/// through `write`), unmapped once copied, and flushed on a helper thread meanwhile.
fn write_mapped_and_sync(
    f: &File,
    parts: &[&[u8]],
    total: usize,
    piece: usize,
) -> std::io::Result<()> {
    write_flushing(f, |flush| {
        let mut start = 0;
        while start < total {
            let end = total.min(start + piece);
            // SAFETY: the file is the temporary file this process just created exclusively
            // under a unique name, and its blocks are reserved: nothing else writes or
            // truncates it while it is mapped, and the mapping is dropped below.
            #[allow(unsafe_code)]
            let mut map = unsafe {
                memmap2::MmapOptions::new()
                    .offset(start as u64)
                    .len(end - start)
                    .map_mut(f)?
            };
            let mut at = 0;
            for part in parts {
                let (lo, hi) = (at.max(start), (at + part.len()).min(end));
                if lo < hi {
                    map[lo - start..hi - start].copy_from_slice(&part[lo - at..hi - at]);
                }
                at += part.len();
            }
            drop(map);
            flush();
            start = end;
        }
        Ok(())
    })
}

/// Creates `dir/.<name of target>.tmp-<pid>-<counter>-<nanos>` exclusively (`O_EXCL`),
/// trying other names if one exists.
fn create_temp(dir: &Path, target: &Path) -> std::io::Result<(PathBuf, File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut last = None;
    for _ in 0..16 {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let tmp = dir.join(format!(
            ".{name}{TEMP_MARK}{}-{}-{nanos:09}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no unique temporary file name")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_written_in_pieces_flushed_meanwhile_holds_every_part_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let a: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let b: Vec<u8> = (0..7_777u32).map(|i| (i % 13) as u8).collect();
        // Pieces smaller and larger than a page, and one piece for the whole file.
        for piece in [1000, 1 << 10, 5000, 1 << 20] {
            let path = dir.path().join(format!("f{piece}"));
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .unwrap();
            write_and_sync_as(&f, &[&a, &b, &[]], piece, true).unwrap();
            drop(f);
            let back = fs::read(&path).unwrap();
            assert_eq!(back.len(), a.len() + b.len(), "piece {piece}");
            assert!(back[..a.len()] == a[..] && back[a.len()..] == b[..]);
            // The same through `write`, as where no blocks can be reserved.
            let path = dir.path().join(format!("w{piece}"));
            let f = File::create(&path).unwrap();
            write_chunked_and_sync(&f, &[&a, &b, &[]], piece).unwrap();
            drop(f);
            assert_eq!(
                fs::read(&path).unwrap(),
                [&a[..], &b[..]].concat(),
                "piece {piece}"
            );
        }
    }

    /// `report --out /dev/null` once replaced the machine's `/dev/null` with a regular file (a
    /// rename over it). A FIFO stands in for the device here: it must stay a FIFO, and what
    /// was written must come out of it.
    #[test]
    fn a_path_that_is_not_a_regular_file_is_written_into_not_renamed_over() {
        use std::os::unix::fs::FileTypeExt;
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("out.fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo {}", fifo.display());
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || fs::read(&fifo).unwrap())
        };
        write_file_atomic(&fifo, &[b"first part, ", b"second part\n"]).unwrap();
        // Checked before joining: had the FIFO been renamed over, its reader would wait forever.
        assert!(fs::metadata(&fifo).unwrap().file_type().is_fifo());
        assert_eq!(reader.join().unwrap(), b"first part, second part\n");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("out.fifo")],
            "no temporary file left"
        );
        // A regular file is still replaced whole.
        let plain = dir.path().join("out.json");
        fs::write(&plain, b"old, longer contents").unwrap();
        write_file_atomic(&plain, &[b"new"]).unwrap();
        assert_eq!(fs::read(&plain).unwrap(), b"new");
    }

    #[test]
    fn file_names_round_trip() {
        assert_eq!(file_name(123), "snap-123.ccc");
        assert_eq!(parse_file_name("snap-123.ccc"), Some(123));
        for bad in [
            "snap-.ccc",
            "snap-12a.ccc",
            "snap-1.ccc.tmp",
            ".snap-1.ccc.tmp-9",
            "x-1.ccc",
        ] {
            assert_eq!(parse_file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn header_round_trips_and_checks_length() {
        let h = Header {
            version: FORMAT_VERSION,
            archive_len: 100,
            checksum: 0xabcdef,
            sequence: 7,
            built_at_unix_ms: 9,
        };
        let bytes = h.encode();
        let p = Path::new("x.ccc");
        assert_eq!(Header::decode(&bytes, 164, p).unwrap(), h);
        assert!(matches!(
            Header::decode(&bytes, 163, p),
            Err(SnapshotError::Length {
                expected: 164,
                actual: 163,
                ..
            })
        ));
        assert!(matches!(
            Header::decode(&bytes[..10], 10, p),
            Err(SnapshotError::Length { .. })
        ));
        let mut bad = bytes;
        bad[0] = b'X';
        assert!(matches!(
            Header::decode(&bad, 164, p),
            Err(SnapshotError::BadMagic { .. })
        ));
        let mut v2 = bytes;
        v2[8] = 99;
        assert!(matches!(
            Header::decode(&v2, 164, p),
            Err(SnapshotError::Version { found: 99, .. })
        ));
    }
}
