//! Bounds on what a drop can make the loader read, and opening files without following links.
//!
//! A drop comes from outside: its publisher's system may be compromised or broken. Every bound
//! here is applied *before* the work it bounds: a file's type and size are checked on the
//! opened descriptor before a byte is read, the manifest and signature are read through a
//! cap, a CSV record is refused as soon as the bytes read for it pass the cap (so the parser
//! never buffers more than the cap plus one read buffer), and decompressed bytes are counted
//! as they come out of the decoder.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// The bounds a [`crate::Loader`] applies. Every one has a command-line flag (`load build`,
/// `serve --drop-dir`); the defaults fit a register of several million records with room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest `manifest.json`, in bytes (`--max-manifest-bytes`). Default 1 MiB.
    pub max_manifest_bytes: u64,
    /// Largest `manifest.json.sig`, in bytes. Default 4 KiB (a signature is 88 characters).
    pub max_signature_bytes: u64,
    /// Largest CSV field, in bytes as stored (`--max-field-bytes`). Default 64 KiB.
    pub max_field_bytes: u64,
    /// Largest CSV record (all its fields), in bytes (`--max-record-bytes`). Default 1 MiB.
    pub max_record_bytes: u64,
    /// Largest data file after decompression, in bytes; a plain file's size counts as is
    /// (`--max-file-bytes`). Default 8 GiB.
    pub max_file_bytes: u64,
    /// Largest ratio of decompressed to stored bytes of a gzip file (`--max-gzip-ratio`),
    /// applied once a file has decompressed past [`Limits::gzip_ratio_floor`]. Default 100.
    pub max_gzip_ratio: u64,
    /// Decompressed bytes a gzip file may always produce, whatever its ratio. Default 64 MiB.
    pub gzip_ratio_floor: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_manifest_bytes: 1 << 20,
            max_signature_bytes: 4 << 10,
            max_field_bytes: 64 << 10,
            max_record_bytes: 1 << 20,
            max_file_bytes: 8 << 30,
            max_gzip_ratio: 100,
            gzip_ratio_floor: 64 << 20,
        }
    }
}

impl Limits {
    /// These limits with each `Some` override applied (command-line flags, settings).
    pub fn with_overrides(
        mut self,
        max_manifest_bytes: Option<u64>,
        max_field_bytes: Option<u64>,
        max_record_bytes: Option<u64>,
        max_file_bytes: Option<u64>,
        max_gzip_ratio: Option<u64>,
    ) -> Self {
        let set = |v: &mut u64, o: Option<u64>| {
            if let Some(o) = o {
                *v = o;
            }
        };
        set(&mut self.max_manifest_bytes, max_manifest_bytes);
        set(&mut self.max_field_bytes, max_field_bytes);
        set(&mut self.max_record_bytes, max_record_bytes);
        set(&mut self.max_file_bytes, max_file_bytes);
        set(&mut self.max_gzip_ratio, max_gzip_ratio);
        self
    }

    /// The most decompressed bytes a gzip file of `stored` bytes may produce.
    pub fn gzip_budget(&self, stored: u64) -> u64 {
        self.max_file_bytes.min(
            self.max_gzip_ratio
                .saturating_mul(stored)
                .max(self.gzip_ratio_floor),
        )
    }
}

/// Why a file of the drop may not be opened.
#[derive(Debug)]
pub(crate) enum OpenRefusal {
    /// The path does not exist.
    NotFound,
    /// A symbolic link, a FIFO, a device, a socket or a directory.
    NotRegular(String),
    /// Larger than the cap.
    TooLarge { size: u64, cap: u64 },
    /// Any other I/O error.
    Io(io::Error),
}

impl OpenRefusal {
    /// The refusal as an `io::Error` naming what is wrong (the caller adds the path).
    pub fn message(&self) -> String {
        match self {
            OpenRefusal::NotFound => "no such file".into(),
            OpenRefusal::NotRegular(what) => {
                format!("is {what}; a drop holds regular files only")
            }
            OpenRefusal::TooLarge { size, cap } => {
                format!("is {size} bytes, above the limit of {cap} bytes")
            }
            OpenRefusal::Io(e) => e.to_string(),
        }
    }
}

/// Opens `path` for reading if it is a regular file of at most `cap` bytes: without following
/// a symbolic link (`O_NOFOLLOW`), without blocking on a FIFO (`O_NONBLOCK`), and with the
/// type checked on the opened descriptor, so nothing can be swapped in between the check and
/// the read. Returns the file and its size.
pub(crate) fn open_regular(path: &Path, cap: u64) -> Result<(File, u64), OpenRefusal> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => OpenRefusal::NotFound,
            // O_NOFOLLOW on a symbolic link fails with ELOOP.
            _ if e.raw_os_error() == Some(libc::ELOOP) => {
                OpenRefusal::NotRegular("a symbolic link".into())
            }
            _ => OpenRefusal::Io(e),
        })?;
    let meta = file.metadata().map_err(OpenRefusal::Io)?;
    let t = meta.file_type();
    if !t.is_file() {
        let what = if t.is_fifo() {
            "a named pipe (FIFO)"
        } else if t.is_char_device() || t.is_block_device() {
            "a device"
        } else if t.is_socket() {
            "a socket"
        } else if t.is_dir() {
            "a directory"
        } else {
            "not a regular file"
        };
        return Err(OpenRefusal::NotRegular(what.into()));
    }
    if meta.len() > cap {
        return Err(OpenRefusal::TooLarge {
            size: meta.len(),
            cap,
        });
    }
    Ok((file, meta.len()))
}

/// Reads a whole small file (manifest, signature, key) through [`open_regular`], never more
/// than `cap` bytes even if the file grows while it is read.
pub(crate) fn read_small(path: &Path, cap: u64) -> Result<Vec<u8>, OpenRefusal> {
    let (file, size) = open_regular(path, cap)?;
    let mut out = Vec::with_capacity(size as usize);
    file.take(cap + 1)
        .read_to_end(&mut out)
        .map_err(OpenRefusal::Io)?;
    if out.len() as u64 > cap {
        return Err(OpenRefusal::TooLarge {
            size: out.len() as u64,
            cap,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_fifos_devices_and_directories_are_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        assert!(matches!(
            open_regular(&link, 1 << 20),
            Err(OpenRefusal::NotRegular(w)) if w.contains("symbolic link")
        ));
        assert!(matches!(
            open_regular(Path::new("/dev/zero"), 1 << 20),
            Err(OpenRefusal::NotRegular(w)) if w.contains("device")
        ));
        assert!(matches!(
            open_regular(dir.path(), 1 << 20),
            Err(OpenRefusal::NotRegular(w)) if w.contains("directory")
        ));
        let fifo = dir.path().join("pipe");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        // Without O_NONBLOCK this open would wait for a writer for ever.
        assert!(matches!(
            open_regular(&fifo, 1 << 20),
            Err(OpenRefusal::NotRegular(w)) if w.contains("FIFO")
        ));
    }

    #[test]
    fn small_files_are_read_through_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.json");
        std::fs::write(&p, vec![b'x'; 100]).unwrap();
        assert_eq!(read_small(&p, 100).unwrap().len(), 100);
        assert!(matches!(
            read_small(&p, 99),
            Err(OpenRefusal::TooLarge { size: 100, cap: 99 })
        ));
        assert!(matches!(
            read_small(&dir.path().join("none"), 9),
            Err(OpenRefusal::NotFound)
        ));
    }

    #[test]
    fn gzip_budget_is_the_ratio_above_the_floor_below_the_cap() {
        let l = Limits {
            max_file_bytes: 1000,
            max_gzip_ratio: 10,
            gzip_ratio_floor: 50,
            ..Limits::default()
        };
        assert_eq!(l.gzip_budget(1), 50);
        assert_eq!(l.gzip_budget(20), 200);
        assert_eq!(l.gzip_budget(500), 1000);
    }
}
