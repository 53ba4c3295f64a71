//! Regulator feed drops to snapshots.

#![deny(missing_docs)]
