//! `manifest.json`: what a drop says about itself.
//!
//! The manifest is read into a `serde_json::Value` and checked key by key rather than derived
//! with serde, so every refusal names the key at fault (`files[1].sha256`), not a serde type.
//! `format` is checked first: a manifest of another format may have any shape. Keys the
//! contract does not name are ignored, so a publisher may add informative keys.

use std::path::Path;

use cccgate_core::Day;
use serde_json::{Map, Value};

use crate::LoadError;

/// The only manifest format this loader reads.
pub const FORMAT: &str = "ccc-feed/1";

/// A full drop replaces everything; a delta changes some certificates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropKind {
    /// `full`.
    Full,
    /// `delta`.
    Delta,
}

impl DropKind {
    /// The manifest's word for it.
    pub const fn as_str(self) -> &'static str {
        match self {
            DropKind::Full => "full",
            DropKind::Delta => "delta",
        }
    }
}

/// Encoding of every CSV file of a drop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// `utf-8`, with or without a BOM.
    Utf8,
    /// `gbk` (decoded as GB 18030, of which GBK is a subset).
    Gbk,
}

impl Encoding {
    /// The manifest's word for it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Encoding::Utf8 => "utf-8",
            Encoding::Gbk => "gbk",
        }
    }
}

/// What a data file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// The product catalogue.
    Catalogue,
    /// Certificates.
    Certificates,
}

impl FileKind {
    /// The manifest's word for it.
    pub const fn as_str(self) -> &'static str {
        match self {
            FileKind::Catalogue => "catalogue",
            FileKind::Certificates => "certificates",
        }
    }
}

/// One entry of `files`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    /// File name inside the drop directory (no directories).
    pub name: String,
    /// What it holds.
    pub kind: FileKind,
    /// SHA-256 of the file bytes as stored.
    pub sha256: [u8; 32],
    /// Data rows, header excluded.
    pub rows: u64,
}

impl FileEntry {
    /// Whether the file is gzip-compressed (its name ends in `.gz`).
    pub fn is_gzip(&self) -> bool {
        self.name.ends_with(".gz")
    }
}

/// A checked manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// Who publishes the feed.
    pub source: String,
    /// Full or delta.
    pub kind: DropKind,
    /// Strictly increasing per source.
    pub sequence: u64,
    /// Delta only: the sequence it applies on.
    pub base_sequence: Option<u64>,
    /// RFC 3339 with offset, as written.
    pub generated_at: String,
    /// Encoding of the CSV files.
    pub encoding: Encoding,
    /// The data files, in manifest order.
    pub files: Vec<FileEntry>,
}

impl Manifest {
    /// The catalogue file entry, if any.
    pub fn catalogue(&self) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.kind == FileKind::Catalogue)
    }

    /// The certificate file entries, in manifest order.
    pub fn certificate_files(&self) -> impl Iterator<Item = &FileEntry> {
        self.files
            .iter()
            .filter(|f| f.kind == FileKind::Certificates)
    }

    /// Parses and checks the bytes of a manifest; `path` is only for error messages.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Manifest, LoadError> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| LoadError::ManifestSyntax {
                path: path.to_owned(),
                line: e.line(),
                column: e.column(),
                // serde_json appends the position, which the error names already.
                message: e
                    .to_string()
                    .trim_end_matches(&format!(" at line {} column {}", e.line(), e.column()))
                    .to_owned(),
            })?;
        let field_err = |field: &str, message: String| LoadError::ManifestField {
            path: path.to_owned(),
            field: field.to_owned(),
            message,
        };
        let Value::Object(obj) = &value else {
            return Err(field_err("(top level)", "expected a JSON object".into()));
        };
        match obj.get("format") {
            Some(Value::String(s)) if s == FORMAT => {}
            Some(Value::String(s)) => {
                return Err(LoadError::UnknownFormat {
                    path: path.to_owned(),
                    found: s.clone(),
                });
            }
            Some(other) => {
                return Err(LoadError::UnknownFormat {
                    path: path.to_owned(),
                    found: other.to_string(),
                });
            }
            None => {
                return Err(LoadError::UnknownFormat {
                    path: path.to_owned(),
                    found: "(no format key)".into(),
                });
            }
        }
        let source = string(obj, "source").map_err(|m| field_err("source", m))?;
        if source.trim().is_empty() {
            return Err(field_err("source", "must not be empty".into()));
        }
        let kind = match string(obj, "kind")
            .map_err(|m| field_err("kind", m))?
            .as_str()
        {
            "full" => DropKind::Full,
            "delta" => DropKind::Delta,
            other => {
                return Err(field_err(
                    "kind",
                    format!("expected \"full\" or \"delta\", found {other:?}"),
                ));
            }
        };
        let sequence = integer(obj, "sequence").map_err(|m| field_err("sequence", m))?;
        let base_sequence = match kind {
            DropKind::Delta => {
                Some(integer(obj, "base_sequence").map_err(|m| field_err("base_sequence", m))?)
            }
            DropKind::Full => None,
        };
        if let Some(base) = base_sequence
            && base >= sequence
        {
            return Err(field_err(
                "base_sequence",
                format!("{base} is not below the drop's sequence {sequence}"),
            ));
        }
        let generated_at = string(obj, "generated_at").map_err(|m| field_err("generated_at", m))?;
        Day::parse_rfc3339_cn(&generated_at)
            .map_err(|e| field_err("generated_at", e.to_string()))?;
        let encoding = match string(obj, "encoding")
            .map_err(|m| field_err("encoding", m))?
            .to_ascii_lowercase()
            .as_str()
        {
            "utf-8" => Encoding::Utf8,
            "gbk" => Encoding::Gbk,
            other => {
                return Err(field_err(
                    "encoding",
                    format!("expected \"utf-8\" or \"gbk\", found {other:?}"),
                ));
            }
        };
        let Some(files_value) = obj.get("files") else {
            return Err(field_err("files", "missing".into()));
        };
        let Value::Array(items) = files_value else {
            return Err(field_err("files", "expected an array".into()));
        };
        let mut files: Vec<FileEntry> = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let at = |key: &str| format!("files[{i}].{key}");
            let Value::Object(f) = item else {
                return Err(field_err(
                    &format!("files[{i}]"),
                    "expected an object".into(),
                ));
            };
            let name = string(f, "name").map_err(|m| field_err(&at("name"), m))?;
            if name.is_empty()
                || name.contains(['/', '\\'])
                || name == "."
                || name == ".."
                || name.starts_with("manifest.json")
            {
                return Err(field_err(
                    &at("name"),
                    format!("{name:?} is not a plain data file name inside the drop"),
                ));
            }
            if files.iter().any(|e| e.name == name) {
                return Err(field_err(&at("name"), format!("{name:?} is listed twice")));
            }
            let kind = match string(f, "kind")
                .map_err(|m| field_err(&at("kind"), m))?
                .as_str()
            {
                "catalogue" => FileKind::Catalogue,
                "certificates" => FileKind::Certificates,
                other => {
                    return Err(field_err(
                        &at("kind"),
                        format!("expected \"catalogue\" or \"certificates\", found {other:?}"),
                    ));
                }
            };
            if kind == FileKind::Catalogue && files.iter().any(|e| e.kind == FileKind::Catalogue) {
                return Err(field_err(
                    &at("kind"),
                    "a drop has at most one catalogue".into(),
                ));
            }
            let sha_text = string(f, "sha256").map_err(|m| field_err(&at("sha256"), m))?;
            let mut sha256 = [0u8; 32];
            if sha_text.len() != 64 || hex::decode_to_slice(&sha_text, &mut sha256).is_err() {
                return Err(field_err(
                    &at("sha256"),
                    format!("{sha_text:?} is not 64 hex digits"),
                ));
            }
            let rows = integer(f, "rows").map_err(|m| field_err(&at("rows"), m))?;
            files.push(FileEntry {
                name,
                kind,
                sha256,
                rows,
            });
        }
        if kind == DropKind::Full && !files.iter().any(|f| f.kind == FileKind::Catalogue) {
            return Err(field_err(
                "files",
                "a full drop must list a catalogue file (kind \"catalogue\")".into(),
            ));
        }
        if kind == DropKind::Full && !files.iter().any(|f| f.kind == FileKind::Certificates) {
            return Err(field_err(
                "files",
                "a full drop must list at least one certificates file".into(),
            ));
        }
        Ok(Manifest {
            source,
            kind,
            sequence,
            base_sequence,
            generated_at,
            encoding,
            files,
        })
    }
}

fn string(obj: &Map<String, Value>, key: &str) -> Result<String, String> {
    match obj.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(format!("expected a string, found {other}")),
        None => Err("missing".into()),
    }
}

fn integer(obj: &Map<String, Value>, key: &str) -> Result<u64, String> {
    match obj.get(key) {
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| format!("expected a non-negative integer, found {n}")),
        Some(other) => Err(format!("expected a non-negative integer, found {other}")),
        None => Err("missing".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn manifest(edit: impl FnOnce(&mut Map<String, Value>)) -> Result<Manifest, LoadError> {
        let mut v = serde_json::json!({
            "format": "ccc-feed/1",
            "source": "cnca",
            "kind": "full",
            "sequence": 7,
            "generated_at": "2026-11-27T02:00:00+08:00",
            "encoding": "utf-8",
            "files": [
                {"name": "catalogue.csv", "kind": "catalogue", "sha256": SHA, "rows": 3},
                {"name": "certificates.csv.gz", "kind": "certificates", "sha256": SHA, "rows": 10}
            ]
        });
        if let Value::Object(o) = &mut v {
            edit(o);
        }
        Manifest::parse(v.to_string().as_bytes(), Path::new("manifest.json"))
    }

    fn field_of(r: Result<Manifest, LoadError>) -> String {
        match r {
            Err(LoadError::ManifestField { field, .. }) => field,
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn well_formed_manifest_is_read() {
        let m = manifest(|_| {}).unwrap();
        assert_eq!(m.kind, DropKind::Full);
        assert_eq!(m.sequence, 7);
        assert_eq!(m.encoding, Encoding::Utf8);
        assert_eq!(m.files.len(), 2);
        assert_eq!(m.catalogue().unwrap().rows, 3);
        assert!(m.files[1].is_gzip());
        assert_eq!(m.files[0].sha256[1], 0x11);
    }

    #[test]
    fn unknown_format_is_refused_before_anything_else() {
        let r = manifest(|o| {
            o.insert("format".into(), "ccc-feed/2".into());
            o.remove("files");
        });
        assert!(matches!(r, Err(LoadError::UnknownFormat { found, .. }) if found == "ccc-feed/2"));
        let r = manifest(|o| {
            o.remove("format");
        });
        assert!(matches!(r, Err(LoadError::UnknownFormat { .. })));
    }

    #[test]
    fn unknown_keys_are_ignored() {
        assert!(
            manifest(|o| {
                o.insert("publisher_note".into(), "hello".into());
            })
            .is_ok()
        );
    }

    #[test]
    fn delta_needs_a_base_sequence_below_its_sequence() {
        let r = manifest(|o| {
            o.insert("kind".into(), "delta".into());
        });
        assert_eq!(field_of(r), "base_sequence");
        let r = manifest(|o| {
            o.insert("kind".into(), "delta".into());
            o.insert("base_sequence".into(), 7.into());
        });
        assert_eq!(field_of(r), "base_sequence");
        let m = manifest(|o| {
            o.insert("kind".into(), "delta".into());
            o.insert("base_sequence".into(), 6.into());
        })
        .unwrap();
        assert_eq!(m.base_sequence, Some(6));
    }

    #[test]
    fn bad_values_name_their_key() {
        assert_eq!(
            field_of(manifest(|o| {
                o.insert("sequence".into(), (-1).into());
            })),
            "sequence"
        );
        assert_eq!(
            field_of(manifest(|o| {
                o.insert("encoding".into(), "latin1".into());
            })),
            "encoding"
        );
        assert_eq!(
            field_of(manifest(|o| {
                o.insert("generated_at".into(), "2026-11-27".into());
            })),
            "generated_at"
        );
        assert_eq!(
            field_of(manifest(|o| {
                o.insert("kind".into(), "partial".into());
            })),
            "kind"
        );
        assert_eq!(
            field_of(manifest(|o| {
                o["files"][1]["sha256"] = "abc".into();
            })),
            "files[1].sha256"
        );
        assert_eq!(
            field_of(manifest(|o| {
                o["files"][1]["name"] = "../etc/passwd".into();
            })),
            "files[1].name"
        );
        assert_eq!(
            field_of(manifest(|o| {
                o["files"][0]["rows"] = "3".into();
            })),
            "files[0].rows"
        );
    }

    #[test]
    fn full_drop_needs_a_catalogue() {
        let r = manifest(|o| {
            if let Some(Value::Array(a)) = o.get_mut("files") {
                a.remove(0);
            }
        });
        assert_eq!(field_of(r), "files");
    }

    #[test]
    fn json_syntax_errors_name_line_and_column() {
        let r = Manifest::parse(b"{\n  \"format\": \"ccc-feed/1\",,\n}", Path::new("m.json"));
        assert!(
            matches!(r, Err(LoadError::ManifestSyntax { line: 2, .. })),
            "{r:?}"
        );
    }
}
