//! `manifest.json` parsing: any bytes give a manifest or a typed error, never a panic; a
//! parsed manifest keeps the contract's invariants.
#![no_main]

use std::path::Path;

use cccgate_loader::{DropKind, Manifest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::parse(data, Path::new("manifest.json")) {
        if m.kind == DropKind::Delta {
            assert!(m.base_sequence.is_some_and(|b| b < m.sequence));
        } else {
            assert!(m.catalogue().is_some());
        }
        for f in &m.files {
            assert!(!f.name.is_empty() && !f.name.contains('/'));
        }
    }
});
