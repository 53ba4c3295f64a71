//! The snapshot format: build, write atomically, open with mmap, verify, look up.

#![deny(missing_docs)]
