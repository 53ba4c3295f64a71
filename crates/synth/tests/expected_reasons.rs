//! The generator's promise: every listing's `expected` is exactly the reason
//! `cccgate_core::check` gives it with the default policy, against a real snapshot built from
//! the same register.

use cccgate_core::{Day, Decision, Policy, Reason, check};
use cccgate_snapshot::{BuildInfo, Snapshot, SnapshotBuilder};
use cccgate_synth::{
    EventWindow, GeneratedListing, ListingGenerator, Profile, RegisterSpec, SyntheticRegister,
};

fn register() -> SyntheticRegister {
    RegisterSpec {
        certs: 20_000,
        seed: 11,
        ..RegisterSpec::default()
    }
    .generate()
}

fn snapshot(register: &SyntheticRegister) -> Snapshot {
    let info = BuildInfo {
        sequence: 1,
        source: "synth".into(),
        generated_at: "2026-11-27T02:00:00+08:00".into(),
        built_at_unix_ms: 0,
    };
    let mut b = SnapshotBuilder::new(info, register.catalogue.clone());
    for r in &register.records {
        b.upsert(r.clone());
    }
    Snapshot::from_bytes(b.build().expect("build")).expect("open")
}

/// Checks `n` listings of `generator` received on `received`; returns counts per reason.
fn verify(
    snap: &Snapshot,
    mut generator: ListingGenerator,
    n: usize,
    received: Day,
) -> [u64; Reason::COUNT] {
    let policy = Policy::default();
    let mut out = GeneratedListing::default();
    let mut counts = [0u64; Reason::COUNT];
    for _ in 0..n {
        generator.fill(&mut out);
        let listing = out
            .event
            .listing(received)
            .unwrap_or_else(|e| panic!("{:?}: {e}", out.event));
        let got = check(snap, &listing, &policy).reason;
        assert_eq!(got, out.expected, "{:?}", out.event);
        counts[got.index()] += 1;
    }
    counts
}

#[test]
fn expected_reason_is_what_check_returns_for_every_listing() {
    let reg = register();
    let snap = snapshot(&reg);
    for profile in Profile::ALL {
        let counts = verify(
            &snap,
            ListingGenerator::new(&reg, profile, 3),
            40_000,
            reg.as_of,
        );
        // Every reason of the table occurs.
        for r in Reason::ALL {
            assert!(counts[r.index()] > 0, "{profile}: no {r}");
        }
    }
}

#[test]
fn expected_reasons_hold_for_shards_and_typed_variants() {
    let reg = register();
    let snap = snapshot(&reg);
    let g = ListingGenerator::new(&reg, Profile::Y2025, 8);
    for shard in g.shards(3) {
        verify(&snap, shard, 10_000, reg.as_of);
    }
}

#[test]
fn empty_event_times_hold_on_any_receiving_day_in_the_promised_range() {
    let reg = register();
    let snap = snapshot(&reg);
    let days = [
        Day::from_ymd(2024, 8, 1).unwrap(),
        reg.as_of,
        Day::from_days(reg.as_of.days() + 30),
    ];
    for received in days {
        let g = ListingGenerator::new(&reg, Profile::Y2021, 5).with_event_time(None);
        let counts = verify(&snap, g, 20_000, received);
        assert!(counts[Reason::CertificateExpired.index()] > 0);
    }
}

#[test]
fn expected_reasons_hold_for_a_callers_window_far_from_as_of() {
    // Before the 2023 revision and before power banks: the day rules correct the case.
    let reg = register();
    let snap = snapshot(&reg);
    let window = EventWindow {
        first: Day::from_ymd(2021, 1, 1).unwrap(),
        last: Day::from_ymd(2021, 12, 31).unwrap(),
    };
    let g = ListingGenerator::new(&reg, Profile::Y2021, 6).with_event_time(Some(window));
    verify(&snap, g, 20_000, reg.as_of);
    let late = EventWindow::day(Day::from_ymd(2027, 6, 1).unwrap());
    let g = ListingGenerator::new(&reg, Profile::Y2025, 6).with_event_time(Some(late));
    verify(&snap, g, 10_000, reg.as_of);
}

#[test]
fn the_stream_blocks_about_the_published_share() {
    let reg = register();
    let snap = snapshot(&reg);
    for profile in Profile::ALL {
        let n = 100_000;
        let counts = verify(&snap, ListingGenerator::new(&reg, profile, 9), n, reg.as_of);
        let policy = Policy::default();
        let blocked: u64 = Reason::ALL
            .iter()
            .filter(|r| policy.decision(**r) == Decision::Block)
            .map(|r| counts[r.index()])
            .sum();
        let share = blocked as f64 / n as f64;
        let want = profile.blocked_share();
        // Binomial noise at 100k is ~0.07 percentage points; allow a few times that.
        assert!((share - want).abs() < 0.003, "{profile}: {share} vs {want}");
        let review = counts[Reason::ModelNotCovered.index()] as f64 / n as f64;
        assert!(
            (review - profile.review_share()).abs() < 0.002,
            "{profile}: {review}"
        );
    }
}

#[test]
fn expected_reasons_hold_for_registers_of_other_dates() {
    for (y, m, d) in [(2001, 1, 1), (2010, 6, 15), (2024, 8, 1)] {
        let reg = RegisterSpec {
            certs: 3_000,
            seed: 2,
            as_of: Day::from_ymd(y, m, d).unwrap(),
        }
        .generate();
        let snap = snapshot(&reg);
        for window in [true, false] {
            let mut g = ListingGenerator::new(&reg, Profile::Y2025, 4);
            if !window {
                g = g.with_event_time(None);
            }
            verify(&snap, g, 10_000, reg.as_of);
        }
    }
}
