//! `cccgate load`: feed drops to snapshot files, and tools to verify, inspect and diff them.
//!
//! All the work is in `cccgate-loader` and `cccgate-snapshot`; this module parses arguments,
//! chooses the snapshot in force (`--base`, else the newest `snap-<sequence>.ccc` in the
//! output directory), writes the results and prints what happened. A refused drop exits
//! non-zero and writes nothing; a stale drop is skipped with a message and exits zero.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use cccgate_core::{Catalogue, CertNumber, CertificateRecord, Status};
use cccgate_loader::{
    BuildReport, LoadOutcome, Loader, SignatureCheck, SnapshotIdentity, read_signing_key,
    read_verifying_key, reject_csv, snapshot_signature_path, verify_snapshot_signature,
    write_snapshot_signature,
};
use cccgate_snapshot::{Change, Counts, OpenMode, Snapshot, SnapshotDir};

/// `println!` that returns an error instead of panicking when stdout is closed (`| head`).
macro_rules! out {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout().lock(), $($arg)*)?
    };
}

/// Subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Build the next snapshot from a feed drop and write it atomically as
    /// OUT/snap-<sequence>.ccc.
    Build(BuildArgs),
    /// Check a snapshot file: length, format version, checksum, archive validation.
    Verify {
        /// The snapshot file.
        file: PathBuf,
        /// Also check its signature (FILE.sig) under this Ed25519 public key.
        #[arg(long, value_name = "FILE")]
        public_key: Option<PathBuf>,
    },
    /// Show a snapshot's header, counts by status and category, and one certificate.
    Inspect {
        /// The snapshot file.
        file: PathBuf,
        /// Show this certificate (typed as a merchant would: prefixes, dashes, full-width ok).
        #[arg(long)]
        cert: Option<String>,
    },
    /// Certificates added, removed and changed status between two snapshots.
    Diff {
        /// The older snapshot.
        old: PathBuf,
        /// The newer snapshot.
        new: PathBuf,
        /// Also write every change as a JSON line to this file.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Arguments of `load build`.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The drop directory (holding manifest.json).
    #[arg(long)]
    drop: PathBuf,
    /// Where snapshot files live; snap-<sequence>.ccc is written here.
    #[arg(long)]
    out: PathBuf,
    /// The snapshot in force (default: the newest snap-<sequence>.ccc in --out).
    #[arg(long, conflicts_with = "no_base")]
    base: Option<PathBuf>,
    /// Build as if no snapshot were in force (no stale check, no shrink guard, no delta).
    #[arg(long)]
    no_base: bool,
    /// Set up to N bad certificate rows aside into OUT/reject-<sequence>.csv instead of
    /// refusing the drop.
    #[arg(
        long,
        env = "CCCGATE_DROP_MAX_BAD_ROWS",
        default_value_t = 0,
        value_name = "N"
    )]
    max_bad_rows: u64,
    /// Accept a full drop that the shrink guard refuses.
    #[arg(long)]
    force: bool,
    /// Largest allowed fall in valid certificates of a full drop, as a fraction.
    #[arg(
        long,
        env = "CCCGATE_DROP_SHRINK_THRESHOLD",
        default_value_t = cccgate_loader::DEFAULT_SHRINK_THRESHOLD,
        value_name = "FRACTION"
    )]
    shrink_threshold: f64,
    /// Ed25519 public key file: drops must carry a valid manifest.json.sig.
    #[arg(long, env = "CCCGATE_DROP_PUBLIC_KEY", value_name = "FILE")]
    public_key: Option<PathBuf>,
    #[command(flatten)]
    limits: LimitArgs,
    /// Ed25519 secret key file: also write OUT/snap-<sequence>.ccc.sig, a detached signature
    /// of the snapshot's sequence, content id and archive SHA-256 (for `serve
    /// --snapshot-public-key`). Written before the snapshot.
    #[arg(long, env = "CCCGATE_SNAPSHOT_SIGN_KEY", value_name = "FILE")]
    sign_key: Option<PathBuf>,
    /// After publishing, keep only the newest N snapshots in --out (their reject and .sig
    /// files go with them; the new one is always kept) [default: keep all].
    #[arg(long, env = "CCCGATE_KEEP_SNAPSHOTS", value_name = "N")]
    keep_snapshots: Option<usize>,
}

/// Bounds on what a drop may make the loader read (`load build`; `serve` has the same as
/// `--drop-max-...`). Unset: the defaults of `cccgate_loader::Limits`.
#[derive(Debug, clap::Args)]
pub struct LimitArgs {
    /// Largest manifest.json, in bytes [default: 1048576].
    #[arg(long, env = "CCCGATE_DROP_MAX_MANIFEST_BYTES", value_name = "BYTES")]
    max_manifest_bytes: Option<u64>,
    /// Largest CSV field, in bytes [default: 65536].
    #[arg(long, env = "CCCGATE_DROP_MAX_FIELD_BYTES", value_name = "BYTES")]
    max_field_bytes: Option<u64>,
    /// Largest CSV record, in bytes [default: 1048576].
    #[arg(long, env = "CCCGATE_DROP_MAX_RECORD_BYTES", value_name = "BYTES")]
    max_record_bytes: Option<u64>,
    /// Largest data file after decompression, in bytes [default: 8589934592].
    #[arg(long, env = "CCCGATE_DROP_MAX_FILE_BYTES", value_name = "BYTES")]
    max_file_bytes: Option<u64>,
    /// Largest decompressed/stored ratio of a gzip file past its first 64 MiB [default: 100].
    #[arg(long, env = "CCCGATE_DROP_MAX_GZIP_RATIO", value_name = "RATIO")]
    max_gzip_ratio: Option<u64>,
}

impl LimitArgs {
    fn limits(&self) -> cccgate_loader::Limits {
        cccgate_loader::Limits::default().with_overrides(
            self.max_manifest_bytes,
            self.max_field_bytes,
            self.max_record_bytes,
            self.max_file_bytes,
            self.max_gzip_ratio,
        )
    }
}

pub fn run(cmd: Command) -> anyhow::Result<()> {
    // A short-lived tool: a snapshot it writes may go through a mapping (faster; see
    // `write_through_mappings` for why the gateway never does this).
    cccgate_snapshot::write_through_mappings(true);
    match cmd {
        Command::Build(args) => build(args),
        Command::Verify { file, public_key } => verify(&file, public_key.as_deref()),
        Command::Inspect { file, cert } => inspect(&file, cert.as_deref()),
        Command::Diff { old, new, out } => diff(&old, &new, out.as_deref()),
    }
}

fn build(args: BuildArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    if !(0.0..1.0).contains(&args.shrink_threshold) {
        bail!("--shrink-threshold must be a fraction in [0, 1), e.g. 0.05");
    }
    let public_key = match &args.public_key {
        Some(p) => Some(read_verifying_key(p)?),
        None => None,
    };
    if args.keep_snapshots == Some(0) {
        bail!("--keep-snapshots must be at least 1");
    }
    let sign_key = match &args.sign_key {
        Some(p) => Some(read_signing_key(p)?),
        None => None,
    };
    let loader = Loader {
        public_key,
        max_bad_rows: args.max_bad_rows,
        shrink_threshold: args.shrink_threshold,
        force: args.force,
        limits: args.limits.limits(),
    };
    let snapshots = SnapshotDir::new(&args.out);
    let base = if args.no_base {
        None
    } else if let Some(b) = &args.base {
        let s = Snapshot::open(b).context("the snapshot in force cannot be used")?;
        Some((b.clone(), s))
    } else {
        let latest = snapshots
            .latest(OpenMode::Map)
            .with_context(|| format!("{}: cannot list snapshots", args.out.display()))?;
        match latest {
            Some(l) => {
                for e in &l.skipped {
                    out!("skipped:     {e}");
                }
                Some((l.path, l.snapshot))
            }
            None => None,
        }
    };
    if let Some((p, s)) = &base {
        out!("in force:    {} (sequence {})", p.display(), s.sequence());
    }
    let base = base.map(|(_, s)| s);

    let outcome = loader
        .load(&args.drop, base.as_ref())
        .with_context(|| format!("drop {} refused; nothing written", args.drop.display()))?;
    let (bytes, report) = match outcome {
        LoadOutcome::Stale { sequence, in_force } => {
            out!(
                "skipped: drop {} has sequence {sequence}, not above the sequence in force {in_force}; nothing written",
                args.drop.display()
            );
            return Ok(());
        }
        LoadOutcome::Built { bytes, report } => (bytes, report),
    };

    let sequence = report.manifest.sequence;
    let rejects = if report.rejected.is_empty() {
        None
    } else {
        Some(reject_csv(&report.rejected).context("cannot write the reject file")?)
    };
    if let Some(key) = &sign_key {
        // The signature goes first, so a gateway that checks signatures never finds the
        // snapshot without it.
        fs::create_dir_all(&args.out)
            .with_context(|| format!("{}: cannot create directory", args.out.display()))?;
        let path = snapshots.snapshot_path(sequence);
        let sig = write_snapshot_signature(&path, &SnapshotIdentity::of_bytes(&bytes), key)
            .with_context(|| format!("{}: cannot write the signature", path.display()))?;
        out!("signed:      {}", sig.display());
    }
    let published = snapshots
        .publish(&bytes, rejects.as_deref(), OpenMode::Map)
        .context("the snapshot cannot be published")?;
    drop(bytes);
    let (path, written) = (published.path, published.snapshot);
    let reject_path = snapshots.reject_path(sequence);
    print_build(&path, &written, &report, &reject_path)?;
    if let Some(keep) = args.keep_snapshots {
        let removed = snapshots
            .prune(keep, Some(sequence))
            .context("the snapshot is published, but old ones cannot be pruned")?;
        out!(
            "pruned:      {} old snapshots (keeping {keep})",
            removed.len()
        );
    }
    out!(
        "time:        {:.2} s (drop to snapshot bytes {:.2} s)",
        started.elapsed().as_secs_f64(),
        report.elapsed.as_secs_f64()
    );
    Ok(())
}

fn print_build(
    path: &Path,
    snap: &Snapshot,
    report: &BuildReport,
    reject_path: &Path,
) -> anyhow::Result<()> {
    let m = &report.manifest;
    out!(
        "built:       {} ({} drop, sequence {}{}, source {}, generated {})",
        path.display(),
        m.kind.as_str(),
        m.sequence,
        report
            .applied_on
            .map(|b| format!(" on {b}"))
            .unwrap_or_default(),
        m.source,
        m.generated_at
    );
    out!("content id:  {}", snap.content_id());
    out!("size:        {} bytes", snap.byte_len());
    let files: Vec<String> = report
        .files
        .iter()
        .map(|f| format!("{} ({} rows, {} bytes)", f.name, f.rows, f.bytes))
        .collect();
    out!(
        "files:       {} [{}]",
        m.encoding.as_str(),
        files.join(", ")
    );
    out!(
        "read:        {} certificate rows, {} certificates, {} identical duplicates collapsed{}",
        report.rows,
        report.certificates,
        report.duplicates_collapsed,
        if report.catalogue_replaced {
            ", catalogue replaced"
        } else {
            ", catalogue kept"
        }
    );
    if report.number_code_mismatches > 0 {
        out!(
            "note:        {} certificates' numbers carry other product digits than 产品类别代码 (accepted)",
            report.number_code_mismatches
        );
    }
    if report.rejected.is_empty() {
        out!("set aside:   0 bad rows");
    } else {
        out!(
            "set aside:   {} bad rows -> {}",
            report.rejected.len(),
            reject_path.display()
        );
    }
    if let Some(before) = report.valid_before {
        out!(
            "shrink:      valid {} -> {}{}",
            before,
            report.valid,
            if report.shrink_forced {
                " (over the guard, forced)"
            } else {
                ""
            }
        );
    }
    if let Some(changes) = report.validity_changes {
        out!(
            "delta guard: {changes} certificates change validity{}",
            if report.delta_forced {
                " (over the guard, forced)"
            } else {
                ""
            }
        );
    }
    out!(
        "signature:   {}",
        match report.signature {
            SignatureCheck::Verified => "verified",
            SignatureCheck::NotChecked => "not checked (no public key configured)",
        }
    );
    print_counts(snap.counts())?;
    print_categories(snap)
}

fn print_counts(c: Counts) -> anyhow::Result<()> {
    let parts: Vec<String> = Status::ALL
        .iter()
        .map(|s| format!("{} {}", s.as_chinese(), c.of(*s)))
        .collect();
    out!("certificates: {} ({})", c.total, parts.join(", "));
    Ok(())
}

fn print_categories(snap: &Snapshot) -> anyhow::Result<()> {
    let catalogue = snap.catalogue();
    let mut by_category: BTreeMap<u8, [u64; 5]> = BTreeMap::new();
    for c in snap.iter() {
        let slot = by_category.entry(c.product_code.category()).or_default();
        slot[usize::from(c.status.code() - 1)] += 1;
    }
    out!("by category:  (total / 有效)");
    for (cat, counts) in by_category {
        out!(
            "  {cat:02} {:<24} {:>9} / {:>9}",
            category_name(&catalogue, cat),
            counts.iter().sum::<u64>(),
            counts[0]
        );
    }
    Ok(())
}

fn category_name(catalogue: &Catalogue, category: u8) -> &str {
    catalogue
        .entries()
        .iter()
        .find(|e| e.category_code == category)
        .map_or("(not in catalogue)", |e| e.category_name.as_str())
}

/// Milliseconds since the epoch as China time, e.g. `2026-11-27 10:44:18 +08:00`.
fn china_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let day = cccgate_core::Day::from_unix_seconds_cn(secs);
    let in_day = (secs + 8 * 3600).rem_euclid(86_400);
    format!(
        "{day} {:02}:{:02}:{:02} +08:00",
        in_day / 3600,
        in_day / 60 % 60,
        in_day % 60
    )
}

fn verify(file: &Path, public_key: Option<&Path>) -> anyhow::Result<()> {
    let snap = Snapshot::open(file)?;
    if let Some(key) = public_key {
        let key = read_verifying_key(key)?;
        verify_snapshot_signature(file, &SnapshotIdentity::of_snapshot(&snap), &key)
            .with_context(|| format!("{}: signature refused", file.display()))?;
        out!(
            "signature verified: {}",
            snapshot_signature_path(file).display()
        );
    }
    out!(
        "ok: {} sequence {} content id {} ({} certificates, {} bytes)",
        file.display(),
        snap.sequence(),
        snap.content_id(),
        snap.counts().total,
        snap.byte_len()
    );
    Ok(())
}

fn inspect(file: &Path, cert: Option<&str>) -> anyhow::Result<()> {
    let snap = Snapshot::open(file)?;
    out!("file:         {}", file.display());
    out!("sequence:     {}", snap.sequence());
    out!("source:       {}", snap.source());
    out!("generated at: {}", snap.generated_at());
    out!("built at:     {}", china_time(snap.built_at_unix_ms()));
    out!("content id:   {}", snap.content_id());
    out!("size:         {} bytes", snap.byte_len());
    let tables: Vec<String> = snap
        .table_bytes()
        .iter()
        .map(|(name, b)| format!("{name} {b}"))
        .collect();
    out!("tables:       {} (bytes)", tables.join(", "));
    let catalogue = snap.catalogue();
    out!("catalogue:    {} entries", catalogue.entries().len());
    print_counts(snap.counts())?;
    print_categories(&snap)?;
    if let Some(text) = cert {
        let parsed = CertNumber::normalize(text)
            .with_context(|| format!("--cert {text:?} is not a certificate number"))?;
        match snap.record(parsed.number) {
            Some(r) => print_record(&r)?,
            None => bail!("certificate {} is not in {}", parsed.number, file.display()),
        }
    }
    Ok(())
}

fn print_record(r: &CertificateRecord) -> anyhow::Result<()> {
    let number = match r.suffix {
        Some([a, b]) => format!("{}({}{})", r.number, a as char, b as char),
        None => r.number.to_string(),
    };
    let day = |d: Option<cccgate_core::Day>| d.map(|d| d.to_string()).unwrap_or_default();
    writeln!(std::io::stdout().lock())?;
    out!("证书编号       {number}");
    out!(
        "证书状态       {} ({})",
        r.status.as_chinese(),
        r.status.as_str()
    );
    out!("产品类别代码   {}", r.product_code);
    out!("产品名称       {}", r.product_name);
    out!("型号规格       {}", r.models.join("；"));
    out!("认证委托人名称 {}", r.applicant);
    out!("生产者名称     {}", r.producer);
    out!("生产企业名称   {}", r.factory);
    out!("发证日期       {}", r.issued);
    out!("证书到期日期   {}", r.expires);
    out!("状态变更日期   {}", day(r.status_changed));
    out!("状态变更原因   {}", r.status_reason);
    out!("认证机构       {}", r.body_name);
    Ok(())
}

fn diff(old: &Path, new: &Path, out: Option<&Path>) -> anyhow::Result<()> {
    let a = Snapshot::open(old)?;
    let b = Snapshot::open(new)?;
    let d = cccgate_snapshot::diff(&a, &b);
    if let Some(p) = out {
        let mut w = BufWriter::new(
            fs::File::create(p).with_context(|| format!("{}: cannot create", p.display()))?,
        );
        for c in &d.changes {
            let line = match *c {
                Change::Added { number, status } => serde_json::json!({
                    "change": "added", "number": number.to_string(), "status": status.as_str(),
                }),
                Change::Status {
                    number,
                    old_status,
                    status,
                } => serde_json::json!({
                    "change": "status", "number": number.to_string(),
                    "old_status": old_status.as_str(), "status": status.as_str(),
                }),
                Change::Removed { number, old_status } => serde_json::json!({
                    "change": "removed", "number": number.to_string(), "old_status": old_status.as_str(),
                }),
            };
            writeln!(w, "{line}")?;
        }
        w.flush()?;
    }
    let (added, removed, changed) = (d.added, d.removed, d.changed);
    let transitions = d.transitions;
    out!(
        "{} (sequence {}) -> {} (sequence {})",
        old.display(),
        a.sequence(),
        new.display(),
        b.sequence()
    );
    out!("added:          {added}");
    out!("removed:        {removed}");
    out!("changed status: {changed}");
    for ((from, to), n) in transitions {
        out!("  {} -> {}: {n}", from.as_chinese(), to.as_chinese());
    }
    if let Some(p) = out {
        out!("changes written to {}", p.display());
    }
    Ok(())
}
