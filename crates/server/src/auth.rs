//! Caller identity on the public plane: bearer tokens from `--auth-tokens FILE`.
//!
//! The file holds one caller per line, `NAME SHA256HEX` (the lowercase hex SHA-256 of the
//! caller's token); blank lines and lines starting with `#` are ignored. The gateway keeps only
//! the hashes: a presented token is hashed and compared with every entry in constant time (no
//! early exit, so timing says nothing about which entry or how many bytes matched). The file is
//! re-read when its size or modification time changes; a file that no longer parses keeps the
//! tokens in force and is reported, never leaving the gateway open or shut by accident.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Why a tokens file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The file cannot be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not `NAME SHA256HEX`.
    #[error("{}: line {line}: {message}", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// The line number (1-based).
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// The callers of a tokens file.
#[derive(Debug, Default)]
struct Tokens {
    entries: Vec<(Arc<str>, [u8; 32])>,
}

fn parse(text: &str, path: &Path) -> Result<Tokens, AuthError> {
    let mut entries = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |message: String| AuthError::Line {
            path: path.to_path_buf(),
            line: i + 1,
            message,
        };
        let mut parts = line.split_whitespace();
        let (Some(name), Some(hex), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(err("expected `NAME SHA256HEX`".into()));
        };
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(err(format!(
                "the hash of {name:?} is not 64 lowercase hex digits (the SHA-256 of the token)"
            )));
        }
        let mut hash = [0u8; 32];
        for (k, byte) in hash.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * k..2 * k + 2], 16).unwrap_or(0);
        }
        if entries.iter().any(|(n, _): &(Arc<str>, _)| &**n == name) {
            return Err(err(format!("{name:?} is named twice")));
        }
        entries.push((Arc::from(name), hash));
    }
    Ok(Tokens { entries })
}

/// The tokens in force, re-read when the file changes.
#[derive(Debug)]
pub(crate) struct TokenAuth {
    path: PathBuf,
    tokens: ArcSwap<Tokens>,
    stamp: std::sync::Mutex<Option<(u64, Option<SystemTime>)>>,
}

fn stamp(path: &Path) -> Option<(u64, Option<SystemTime>)> {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.len(), m.modified().ok()))
}

impl TokenAuth {
    /// Reads `path`; an unreadable or malformed file is an error at start.
    pub(crate) fn open(path: &Path) -> Result<Arc<TokenAuth>, AuthError> {
        let before = stamp(path);
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let tokens = parse(&text, path)?;
        tracing::info!(path = %path.display(), callers = tokens.entries.len(), "auth tokens loaded");
        Ok(Arc::new(TokenAuth {
            path: path.to_path_buf(),
            tokens: ArcSwap::from_pointee(tokens),
            stamp: std::sync::Mutex::new(before),
        }))
    }

    /// Re-reads the file if its size or modification time changed. Returns whether the
    /// tokens in force changed.
    pub(crate) fn refresh(&self) -> bool {
        let now = stamp(&self.path);
        let mut last = self
            .stamp
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *last == now {
            return false;
        }
        *last = now;
        match std::fs::read_to_string(&self.path)
            .map_err(|source| AuthError::Read {
                path: self.path.clone(),
                source,
            })
            .and_then(|t| parse(&t, &self.path))
        {
            Ok(tokens) => {
                tracing::info!(path = %self.path.display(), callers = tokens.entries.len(), "auth tokens re-read");
                self.tokens.store(Arc::new(tokens));
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "auth tokens file not re-read; the tokens in force stay");
                false
            }
        }
    }

    /// Re-reads the file when it changes, every `every`, for as long as the task runs.
    pub(crate) async fn watch(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let this = Arc::clone(&self);
            let _ = tokio::task::spawn_blocking(move || this.refresh()).await;
        }
    }

    /// The caller a token belongs to. Every entry is compared, in constant time.
    pub(crate) fn caller(&self, token: &str) -> Option<Arc<str>> {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let tokens = self.tokens.load();
        let mut found = None;
        for (name, want) in &tokens.entries {
            if bool::from(want.ct_eq(&hash)) {
                found = Some(Arc::clone(name));
            }
        }
        found
    }
}

/// The token of an `authorization: Bearer TOKEN` header value.
pub(crate) fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(token: &str) -> String {
        Sha256::digest(token.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn tokens_name_their_callers_and_the_file_is_re_read_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(
            &path,
            format!(
                "# callers\n\nshop-a {}\nshop-b   {}\n",
                hex("ta"),
                hex("tb")
            ),
        )
        .unwrap();
        let auth = TokenAuth::open(&path).unwrap();
        assert_eq!(auth.caller("ta").as_deref(), Some("shop-a"));
        assert_eq!(auth.caller("tb").as_deref(), Some("shop-b"));
        assert_eq!(auth.caller("tc"), None);
        assert!(!auth.refresh(), "unchanged: not re-read");
        std::fs::write(&path, format!("shop-c {}\n", hex("tc"))).unwrap();
        assert!(auth.refresh());
        assert_eq!(auth.caller("ta"), None);
        assert_eq!(auth.caller("tc").as_deref(), Some("shop-c"));
        // A broken file keeps the tokens in force.
        std::fs::write(&path, "shop-d not-a-hash\n").unwrap();
        assert!(!auth.refresh());
        assert_eq!(auth.caller("tc").as_deref(), Some("shop-c"));
    }

    #[test]
    fn bad_lines_are_refused_with_file_and_line() {
        let p = Path::new("tokens.txt");
        let err = parse("a b c\n", p).unwrap_err().to_string();
        assert!(err.starts_with("tokens.txt: line 1:"), "{err}");
        let err = parse(&format!("# x\na {}\n", "AB".repeat(32)), p)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 2") && err.contains("lowercase hex"),
            "{err}"
        );
        let h = hex("t");
        let err = parse(&format!("a {h}\na {h}\n"), p)
            .unwrap_err()
            .to_string();
        assert!(err.contains("named twice"), "{err}");
    }

    #[test]
    fn bearer_headers_are_read_strictly() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("abc"), None);
    }
}
