//! `cccgate synth`: synthetic feed drops and listing files, deterministic from `--seed`.
//!
//! All generation is in `cccgate-synth`; this module parses arguments, opens the base
//! snapshot of a delta, and prints a one-line summary to stderr. A feed and a listing file
//! made with the same `--certs`, `--seed` and `--as-of` describe the same register, so the
//! listings' expected reasons hold against a snapshot loaded from that feed.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use cccgate_core::{Day, Reason, Status};
use cccgate_snapshot::Snapshot;
use cccgate_synth::{
    DropHeader, DropOptions, DropSummary, Encoding, EventWindow, ListingFormat, ListingGenerator,
    Output, Profile, RegisterSpec, SyntheticRegister, default_as_of, delta_changes, generated_at,
    write_drop, write_listings,
};

/// Subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Write a feed drop: the whole synthetic register, or (--delta-of) a day's changes on
    /// top of a snapshot.
    Feed(FeedArgs),
    /// Write listing events against the synthetic register, with their expected reasons.
    Listings(ListingsArgs),
}

/// The register both subcommands generate.
#[derive(Debug, clap::Args)]
pub struct RegisterArgs {
    /// Certificate records in the register.
    #[arg(long, default_value_t = 1_200_000)]
    certs: usize,
    /// Seed of everything generated.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The day the register describes (YYYY-MM-DD); default 2026-11-27.
    #[arg(long, value_parser = parse_day)]
    as_of: Option<Day>,
}

impl RegisterArgs {
    fn spec(&self) -> RegisterSpec {
        RegisterSpec {
            certs: self.certs,
            seed: self.seed,
            as_of: self.as_of.unwrap_or_else(default_as_of),
        }
    }

    fn generate(&self) -> SyntheticRegister {
        let t = Instant::now();
        let reg = self.spec().generate();
        eprintln!(
            "generated {} certificates in {:.2} s",
            reg.records.len(),
            t.elapsed().as_secs_f64()
        );
        reg
    }
}

/// Arguments of `synth feed`.
#[derive(Debug, clap::Args)]
pub struct FeedArgs {
    /// The drop directory to write (created if needed).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    register: RegisterArgs,
    /// Encoding of the CSV files.
    #[arg(long, default_value = "utf-8", value_parser = ["utf-8", "utf-8-bom", "gbk"])]
    encoding: String,
    /// Gzip the certificate files.
    #[arg(long)]
    gzip: bool,
    /// Manifest sequence (default: 1 for a full drop, the base's + 1 for a delta).
    #[arg(long)]
    sequence: Option<u64>,
    /// Number of certificate files.
    #[arg(long, default_value_t = 1)]
    files: usize,
    /// Manifest source.
    #[arg(long, default_value = "cnca")]
    source: String,
    /// Shuffle the column order of each file.
    #[arg(long)]
    shuffle_columns: bool,
    /// Add an extra column the loader must ignore.
    #[arg(long)]
    extra_column: bool,
    /// Write one canonical shape (ISO dates, status words, `；`) instead of varying them.
    #[arg(long)]
    canonical: bool,
    /// Write a delta on top of this snapshot file instead of a full drop.
    #[arg(long, value_name = "SNAPSHOT_FILE")]
    delta_of: Option<PathBuf>,
    /// Certificates a delta changes.
    #[arg(long, default_value_t = 1_000, requires = "delta_of")]
    changes: usize,
}

/// Arguments of `synth listings`.
#[derive(Debug, clap::Args)]
pub struct ListingsArgs {
    /// The listing file to write, or `-` for stdout.
    #[arg(long)]
    out: PathBuf,
    /// Number of listings.
    #[arg(long)]
    count: u64,
    /// Year of load whose mix and merchants to follow.
    #[arg(long, default_value = "2021")]
    profile: Profile,
    #[command(flatten)]
    register: RegisterArgs,
    /// File format.
    #[arg(long, default_value = "jsonl", value_parser = ["jsonl", "csv"])]
    format: String,
    /// Gzip the listing file (and the expected file).
    #[arg(long)]
    gzip: bool,
    /// Also write `{"listing_id":..,"reason":..}` per listing to this file.
    #[arg(long)]
    expected: Option<PathBuf>,
    /// Leave event_time empty (the gateway uses the day it receives each listing).
    #[arg(long)]
    no_event_time: bool,
}

fn parse_day(s: &str) -> Result<Day, String> {
    Day::parse_feed_date(s).map_err(|e| e.to_string())
}

pub fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Feed(args) => feed(args),
        Command::Listings(args) => listings(args),
    }
}

fn feed(args: FeedArgs) -> anyhow::Result<()> {
    let (encoding, bom) = match args.encoding.as_str() {
        "gbk" => (Encoding::Gbk, false),
        "utf-8-bom" => (Encoding::Utf8, true),
        _ => (Encoding::Utf8, false),
    };
    let t = Instant::now();
    let summary = match &args.delta_of {
        None => {
            let reg = args.register.generate();
            let sequence = args.sequence.unwrap_or(1);
            let d = DropOptions::full(sequence);
            let opts = DropOptions {
                header: DropHeader {
                    source: args.source.clone(),
                    generated_at: generated_at(reg.as_of, 2),
                    encoding,
                    ..d.header.clone()
                },
                bom,
                gzip: args.gzip,
                files: args.files,
                shuffle_columns: args.shuffle_columns,
                extra_column: args.extra_column,
                varied: !args.canonical,
                seed: args.register.seed ^ sequence,
            };
            write_drop(&args.out, &opts, Some(&reg.catalogue), reg.records.iter())
                .with_context(|| format!("writing the drop {}", args.out.display()))?
        }
        Some(base_path) => {
            let base = Snapshot::open(base_path)
                .with_context(|| format!("opening the base snapshot {}", base_path.display()))?;
            let base_sequence = base.sequence();
            let sequence = args.sequence.unwrap_or(base_sequence + 1);
            if sequence <= base_sequence {
                bail!("--sequence {sequence} is not above the base's sequence {base_sequence}");
            }
            // The delta's day: --as-of, else the day after the base was generated.
            let as_of = match args.register.as_of {
                Some(d) => d,
                None => Day::parse_rfc3339_cn(base.generated_at())
                    .map(|d| Day::from_days(d.days() + 1))
                    .with_context(|| {
                        format!(
                            "{}: generated_at {:?} is not RFC 3339; give --as-of",
                            base_path.display(),
                            base.generated_at()
                        )
                    })?,
            };
            let changes = delta_changes(base.records(), args.changes, args.register.seed, as_of);
            let d = DropOptions::delta(sequence, base_sequence);
            let opts = DropOptions {
                header: DropHeader {
                    source: args.source.clone(),
                    generated_at: generated_at(as_of, 2),
                    encoding,
                    ..d.header.clone()
                },
                bom,
                gzip: args.gzip,
                files: args.files,
                shuffle_columns: args.shuffle_columns,
                extra_column: args.extra_column,
                varied: !args.canonical,
                seed: args.register.seed ^ sequence,
            };
            write_drop(&args.out, &opts, None, changes.iter())
                .with_context(|| format!("writing the delta {}", args.out.display()))?
        }
    };
    eprintln!("{}", feed_line(&summary, &args, t.elapsed().as_secs_f64()));
    Ok(())
}

fn feed_line(s: &DropSummary, args: &FeedArgs, secs: f64) -> String {
    let kind = if args.delta_of.is_some() {
        "delta"
    } else {
        "full drop"
    };
    let statuses: Vec<String> = Status::ALL
        .iter()
        .map(|st| {
            format!(
                "{} {}",
                st.as_chinese(),
                s.by_status[usize::from(st.code() - 1)]
            )
        })
        .collect();
    format!(
        "wrote {kind} {}: {} certificates ({}), {} files, {:.1} MB, {secs:.2} s",
        s.dir.display(),
        s.certificates,
        statuses.join(", "),
        s.files.len(),
        s.bytes as f64 / 1e6,
    )
}

fn listings(args: ListingsArgs) -> anyhow::Result<()> {
    let reg = args.register.generate();
    let t = Instant::now();
    let window = (!args.no_event_time).then(|| EventWindow::around(reg.as_of));
    let mut generator =
        ListingGenerator::new(&reg, args.profile, args.register.seed).with_event_time(window);
    drop(reg);
    let format = match args.format.as_str() {
        "csv" => ListingFormat::Csv,
        _ => ListingFormat::JsonLines,
    };
    let mut out = Output::create(&args.out, args.gzip)?;
    let mut expected = args
        .expected
        .as_ref()
        .map(|p| Output::create(p, args.gzip))
        .transpose()?;
    let summary = write_listings(
        &mut generator,
        args.count,
        format,
        &mut out,
        expected.as_mut(),
    )?;
    out.finish()?;
    if let Some(e) = expected {
        e.finish()?;
    }
    let blocked: u64 = Reason::ALL
        .iter()
        .filter(|r| r.table_decision() == cccgate_core::Decision::Block)
        .map(|r| summary.by_reason[r.index()])
        .sum();
    let review = summary.by_reason[Reason::ModelNotCovered.index()];
    let n = summary.listings.max(1) as f64;
    eprintln!(
        "wrote {} listings ({} profile) to {}: {:.2}% expected blocked, {:.2}% review, {:.1} MB, {:.2} s",
        summary.listings,
        args.profile,
        args.out.display(),
        blocked as f64 * 100.0 / n,
        review as f64 * 100.0 / n,
        summary.bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
