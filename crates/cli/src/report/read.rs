//! Reading decision logs: plain or gzipped (by their first bytes, whatever their names), in
//! blocks of whole lines, on a thread of their own so decompression overlaps parsing.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use anyhow::Context;

/// Longest line read; a longer one is a bad line (named by file and line) and is skipped.
pub(crate) const MAX_LINE: usize = 64 * 1024;
/// Size of a block handed to the parser.
const BLOCK: usize = 1 << 20;
/// Blocks in flight between the reader thread and the parser: bounds memory to a few MiB.
const IN_FLIGHT: usize = 4;

/// A block of whole lines of one file.
#[derive(Debug)]
pub(crate) enum Block {
    Lines {
        file: usize,
        /// Line number (from 1) of the block's first line.
        first_line: u64,
        bytes: Vec<u8>,
    },
    /// A line longer than [`MAX_LINE`], skipped.
    TooLong { file: usize, line: u64 },
}

/// Opens a file, decompressing it if it starts with the gzip magic bytes (several gzip
/// members in a row are read as one stream, as `gzip -dc` does).
pub(crate) fn open(path: &Path) -> anyhow::Result<Box<dyn Read + Send>> {
    let file = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    let mut reader = BufReader::with_capacity(1 << 18, file);
    let head = reader
        .fill_buf()
        .with_context(|| format!("{}", path.display()))?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(reader)))
    } else {
        Ok(Box::new(reader))
    }
}

/// Starts the reader thread over `paths`, in order; its blocks (or the first error, naming the
/// file) come through the receiver.
pub(crate) fn spawn(
    paths: Vec<PathBuf>,
) -> (
    mpsc::Receiver<anyhow::Result<Block>>,
    std::thread::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::sync_channel(IN_FLIGHT);
    let handle = std::thread::spawn(move || {
        for (i, path) in paths.iter().enumerate() {
            if let Err(e) = read_file(i, path, &tx) {
                let _ = tx.send(Err(e));
                return;
            }
        }
    });
    (rx, handle)
}

fn read_file(
    file: usize,
    path: &Path,
    tx: &mpsc::SyncSender<anyhow::Result<Block>>,
) -> anyhow::Result<()> {
    let mut input = open(path)?;
    let mut line = 1u64;
    // Bytes of a line that started in the previous block.
    let mut carry: Vec<u8> = Vec::new();
    // Skipping the rest of a line that was too long.
    let mut skipping = false;
    loop {
        let mut buf = Vec::with_capacity(BLOCK + carry.len());
        buf.append(&mut carry);
        let start = buf.len();
        buf.resize(start + BLOCK, 0);
        let n = read_full(&mut input, &mut buf[start..])
            .with_context(|| format!("{}: cannot read after line {line}", path.display()))?;
        buf.truncate(start + n);
        let end = n == 0;
        if skipping {
            match memchr(&buf, b'\n') {
                Some(at) => {
                    buf.drain(..=at);
                    line += 1;
                    skipping = false;
                }
                None if end => return Ok(()),
                None => continue,
            }
        }
        // Whole lines go now; the tail waits for the next block.
        let cut = if end {
            buf.len()
        } else {
            match buf.iter().rposition(|&b| b == b'\n') {
                Some(at) => at + 1,
                None => 0,
            }
        };
        carry = buf.split_off(cut);
        if carry.len() > MAX_LINE {
            carry.clear();
            skipping = true;
        }
        if !buf.is_empty() {
            let lines = buf.iter().filter(|&&b| b == b'\n').count() as u64;
            let first_line = line;
            line += lines;
            if tx
                .send(Ok(Block::Lines {
                    file,
                    first_line,
                    bytes: buf,
                }))
                .is_err()
            {
                return Ok(());
            }
        }
        if skipping && tx.send(Ok(Block::TooLong { file, line })).is_err() {
            return Ok(());
        }
        if end {
            return Ok(());
        }
    }
}

fn memchr(b: &[u8], c: u8) -> Option<usize> {
    b.iter().position(|&x| x == c)
}

/// Reads until `buf` is full or the input ends.
fn read_full(input: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
