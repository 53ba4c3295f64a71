//! Round trips, lookups, refusals of damaged files, and deltas.

use std::fs;

use cccgate_core::{
    Catalogue, CatalogueEntry, CertNumber, CertificateRecord, ConformityMode, Day, Decision,
    Listing, Policy, ProductCode, Reason, Register, Status, check,
};

use crate::{
    BuildInfo, HEADER_LEN, Snapshot, SnapshotBuilder, SnapshotBytes, SnapshotError, file_name,
    write_atomic,
};

fn day(y: i32, m: u32, d: u32) -> Day {
    Day::from_ymd(y, m, d).unwrap()
}

fn catalogue() -> Catalogue {
    let e = |code: u16, mode| CatalogueEntry {
        code: ProductCode::new(code).unwrap(),
        name: format!("产品{code:04}"),
        category_code: (code / 100) as u8,
        category_name: "类别".into(),
        mode,
        from: day(2002, 5, 1),
        until: None,
    };
    Catalogue::new(vec![
        e(901, ConformityMode::Certificate),
        e(1606, ConformityMode::Certificate),
        e(1101, ConformityMode::SelfDeclaration),
    ])
    .unwrap()
}

fn record(serial: u32, status: Status, code: u16) -> CertificateRecord {
    let product_code = ProductCode::new(code).unwrap();
    CertificateRecord {
        number: CertNumber::from_parts(2021, 1, product_code, serial).unwrap(),
        suffix: None,
        status,
        product_code,
        product_name: "微型计算机".into(),
        models: vec![
            format!("M-{serial}"),
            format!("M-{serial} Pro"),
            "ＡＢＣ １".into(),
        ],
        applicant: format!("委托人{}", serial % 7),
        producer: format!("生产者{}", serial % 13),
        factory: format!("工厂{}", serial % 5),
        issued: day(2021, 3, 1),
        expires: day(2026, 12, 31),
        status_changed: (status != Status::Valid).then(|| day(2025, 1, 2)),
        status_reason: if status == Status::Valid {
            String::new()
        } else {
            "监督抽查不合格".into()
        },
        body_name: "中国质量认证中心".into(),
    }
}

fn info(sequence: u64) -> BuildInfo {
    BuildInfo {
        sequence,
        source: "cnca".into(),
        generated_at: "2026-11-27T02:00:00+08:00".into(),
        built_at_unix_ms: 1,
    }
}

fn records(n: u32) -> Vec<CertificateRecord> {
    (1..=n)
        .map(|i| {
            record(
                i,
                Status::ALL[(i % 5) as usize],
                if i % 3 == 0 { 1606 } else { 901 },
            )
        })
        .collect()
}

fn build(sequence: u64, recs: &[CertificateRecord]) -> Snapshot {
    let mut b = SnapshotBuilder::new(info(sequence), catalogue());
    recs.iter().cloned().for_each(|r| b.upsert(r));
    Snapshot::from_bytes(b.build().unwrap()).unwrap()
}

#[test]
fn every_record_round_trips_through_a_file() {
    let recs = records(2000);
    let mut b = SnapshotBuilder::new(info(7), catalogue());
    recs.iter().cloned().for_each(|r| b.upsert(r));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(file_name(7));
    write_atomic(&b.build().unwrap(), &path).unwrap();
    let snap = Snapshot::open(&path).unwrap();
    assert_eq!(snap.sequence(), 7);
    assert_eq!(snap.source(), "cnca");
    assert_eq!(snap.content_id().len(), 32);
    assert_eq!(snap.counts().total, 2000);
    assert_eq!(snap.counts().by_status, [400; 5]);
    assert_eq!(snap.catalogue(), catalogue());
    for r in &recs {
        assert_eq!(snap.record(r.number).as_ref(), Some(r));
    }
    assert_eq!(snap.iter().count(), 2000);
    assert_eq!(snap.records().count(), 2000);
    assert!(
        snap.record(CertNumber::from_u64(2021010901999999).unwrap())
            .is_none()
    );
    // Nothing but the snapshot was left in the directory.
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn content_id_does_not_depend_on_when_the_snapshot_was_built() {
    let early = SnapshotBuilder::from_records(
        BuildInfo {
            built_at_unix_ms: 1,
            ..info(4)
        },
        catalogue(),
        records(50),
    );
    let late = SnapshotBuilder::from_records(
        BuildInfo {
            built_at_unix_ms: 2,
            ..info(4)
        },
        catalogue(),
        records(50),
    );
    let (early, late) = (
        Snapshot::from_bytes(early.build().unwrap()).unwrap(),
        Snapshot::from_bytes(late.build().unwrap()).unwrap(),
    );
    assert_eq!(early.content_id(), late.content_id());
    assert_eq!((early.built_at_unix_ms(), late.built_at_unix_ms()), (1, 2));
}

#[test]
fn content_id_is_a_function_of_the_content() {
    let a = build(1, &records(100));
    let b = build(1, &records(100));
    let c = build(1, &records(101));
    assert_eq!(a.content_id(), b.content_id());
    assert_ne!(a.content_id(), c.content_id());
}

#[test]
fn checks_against_a_snapshot_follow_the_table() {
    let recs = records(50);
    let snap = build(3, &recs);
    let today = day(2026, 6, 1);
    let decide = |code: &str, cert: &str, model: &str| {
        let l = Listing::parse("L", "M", code, cert, model, "", today).unwrap();
        let v = check(&snap, &l, &Policy::default());
        assert_eq!(v.snapshot_sequence, 3);
        (v.decision, v.reason)
    };
    let valid = recs
        .iter()
        .find(|r| r.status == Status::Valid && r.product_code.get() == 901)
        .unwrap();
    let n = valid.number.to_string();
    assert_eq!(
        decide("0901", &n, ""),
        (Decision::Allow, Reason::CertificateValid)
    );
    assert_eq!(
        decide("0901", &format!("3C:{n}"), "abc1"),
        (Decision::Allow, Reason::CertificateValid)
    );
    assert_eq!(
        decide("0901", &n, &format!("m-{} pro", valid.number.serial())),
        (Decision::Allow, Reason::CertificateValid)
    );
    assert_eq!(
        decide("0901", &n, "nope"),
        (Decision::Review, Reason::ModelNotCovered)
    );
    assert_eq!(
        decide("1606", &n, ""),
        (Decision::Block, Reason::ProductMismatch)
    );
    assert_eq!(
        decide("1101", "", ""),
        (Decision::Allow, Reason::SelfDeclarationProduct)
    );
    assert_eq!(
        decide("0902", "", ""),
        (Decision::Allow, Reason::NotInCatalogue)
    );
    assert_eq!(
        decide("0901", "2021010901999999", ""),
        (Decision::Block, Reason::CertificateNotFound)
    );
    let revoked = recs.iter().find(|r| r.status == Status::Revoked).unwrap();
    let code = revoked.product_code.to_string();
    assert_eq!(
        decide(&code, &revoked.number.to_string(), ""),
        (Decision::Block, Reason::CertificateRevoked)
    );
    let facts = snap.facts(snap.find(valid.number).unwrap());
    assert_eq!(facts.producer, valid.producer);
    assert_eq!(facts.expires, valid.expires);
}

#[test]
fn truncated_file_is_refused() {
    let snap_bytes = {
        let mut b = SnapshotBuilder::new(info(1), catalogue());
        records(300).into_iter().for_each(|r| b.upsert(r));
        b.build().unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snap-1.ccc");
    let full = snap_bytes.to_vec();
    for cut in [0, 10, 63, 64, 65, full.len() / 2, full.len() - 1] {
        fs::write(&path, &full[..cut]).unwrap();
        let err = Snapshot::open(&path).unwrap_err();
        assert!(
            matches!(err, SnapshotError::Length { .. }),
            "cut at {cut}: {err}"
        );
        assert!(err.to_string().contains("snap-1.ccc"), "{err}");
    }
    let mut longer = full.clone();
    longer.push(0);
    fs::write(&path, &longer).unwrap();
    assert!(matches!(
        Snapshot::open(&path),
        Err(SnapshotError::Length { .. })
    ));
}

#[test]
fn every_flipped_bit_in_a_sample_of_offsets_is_refused() {
    let mut b = SnapshotBuilder::new(info(1), catalogue());
    records(300).into_iter().for_each(|r| b.upsert(r));
    let full = b.build().unwrap().to_vec();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snap-1.ccc");
    // Header fields and a spread of offsets through the archive.
    let mut offsets: Vec<usize> = (0..64).step_by(3).collect();
    offsets.extend((64..full.len()).step_by(full.len() / 97));
    offsets.push(full.len() - 1);
    for off in offsets {
        let mut damaged = full.clone();
        damaged[off] ^= 0x10;
        fs::write(&path, &damaged).unwrap();
        let err = Snapshot::open(&path).expect_err(&format!("flip at {off} was accepted"));
        assert!(err.to_string().contains("snap-1.ccc"), "{err}");
    }
}

#[test]
fn header_fields_that_disagree_with_the_archive_are_refused() {
    let mut b = SnapshotBuilder::new(info(1), catalogue());
    records(10).into_iter().for_each(|r| b.upsert(r));
    let bytes = b.build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.ccc");
    // Any header byte changed is caught by the header's own checksum.
    for off in [40, 48, 55, 60] {
        let mut v = bytes.to_vec();
        v[off] ^= 1;
        fs::write(&path, &v).unwrap();
        assert!(
            matches!(Snapshot::open(&path), Err(SnapshotError::Checksum { .. })),
            "byte {off}"
        );
    }
    // A well-formed header that names another sequence than its archive is refused too.
    let mut header =
        crate::format::Header::decode(&bytes.header, bytes.len() as u64, &path).unwrap();
    header.sequence += 1;
    let mut v = bytes.to_vec();
    v[..64].copy_from_slice(&header.encode());
    fs::write(&path, &v).unwrap();
    assert!(matches!(
        Snapshot::open(&path),
        Err(SnapshotError::Invalid { .. })
    ));
    fs::write(
        &path,
        b"not a snapshot at all, just some text that is long enough to have a header",
    )
    .unwrap();
    assert!(matches!(
        Snapshot::open(&path),
        Err(SnapshotError::BadMagic { .. })
    ));
    assert!(matches!(
        Snapshot::open(&dir.path().join("missing.ccc")),
        Err(SnapshotError::Io { .. })
    ));
}

#[test]
fn delta_on_a_snapshot_replaces_and_inserts() {
    let recs = records(500);
    let base = build(10, &recs);
    let mut b = SnapshotBuilder::from_snapshot(&base, info(11), None);
    assert_eq!(b.len(), 500);
    let mut changed = recs[0].clone();
    changed.status = Status::Revoked;
    changed.models = vec!["NEW-1".into()];
    changed.producer = "新生产者".into();
    let added = record(9999, Status::Valid, 901);
    b.upsert(changed.clone());
    b.upsert(added.clone());
    let next = Snapshot::from_bytes(b.build().unwrap()).unwrap();
    assert_eq!(next.sequence(), 11);
    assert_eq!(next.counts().total, 501);
    assert_eq!(next.record(changed.number), Some(changed.clone()));
    assert_eq!(next.record(added.number), Some(added));
    for r in &recs[1..] {
        assert_eq!(next.record(r.number).as_ref(), Some(r));
    }
    assert_eq!(next.catalogue(), base.catalogue());
    // The new models are probed, the old ones are gone.
    let number = changed.number.to_string();
    let l = Listing::parse(
        "L",
        "M",
        &changed.product_code.to_string(),
        &number,
        "new-1",
        "",
        day(2026, 1, 1),
    )
    .unwrap();
    assert_eq!(
        check(&next, &l, &Policy::default()).reason,
        Reason::CertificateRevoked
    );
    let f = next.facts(next.find(changed.number).unwrap());
    assert_eq!(f.producer, "新生产者");
}

#[test]
fn upserting_the_same_number_keeps_the_last() {
    let mut b = SnapshotBuilder::new(info(1), catalogue());
    let mut r = record(1, Status::Valid, 901);
    b.upsert(r.clone());
    r.status = Status::Suspended;
    b.upsert(r.clone());
    let s = Snapshot::from_bytes(b.build().unwrap()).unwrap();
    assert_eq!(s.counts().total, 1);
    assert_eq!(s.counts().of(Status::Suspended), 1);
    assert_eq!(s.record(r.number), Some(r));
}

#[test]
fn models_prepared_elsewhere_build_the_same_snapshot_and_positions_follow_first_insertion() {
    let mut recs = records(300);
    // A replacement: the same number again, other models.
    let mut again = recs[5].clone();
    again.models = vec!["X 1".into(), "x1".into(), "Y-2".into()];
    recs.push(again);
    let mut by_ref = SnapshotBuilder::new(info(3), catalogue());
    let mut prepared = SnapshotBuilder::new(info(3), catalogue());
    let (mut keys, mut text) = (Vec::new(), String::new());
    for r in &recs {
        by_ref.upsert_ref(&r.as_ref());
        keys.clear();
        text.clear();
        crate::prepare_models(r.as_ref().models, &mut keys, &mut text);
        let names = crate::name_hashes(&r.as_ref());
        prepared.upsert_prepared(&r.as_ref(), &keys, &text, &names);
    }
    assert_eq!(prepared.position(recs[5].number.get()), Some(5));
    assert_eq!(prepared.position(recs[299].number.get()), Some(299));
    assert_eq!(prepared.position(1), None);
    let (a, b) = (by_ref.build().unwrap(), prepared.build().unwrap());
    assert_eq!((a.header, &*a.archive), (b.header, &*b.archive));
}

#[test]
fn empty_register_builds_and_finds_nothing() {
    let s = build(1, &[]);
    assert_eq!(s.counts().total, 0);
    assert!(
        s.find(CertNumber::from_u64(2021010901000001).unwrap())
            .is_none()
    );
    assert!(s.find(CertNumber::ZERO).is_none());
}

#[test]
fn open_or_build_rebuilds_a_damaged_cache_and_reuses_a_good_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache").join("snap-5.ccc");
    let make = || SnapshotBuilder::from_records(info(5), catalogue(), records(20)).build();
    let first = Snapshot::open_or_build(&path, make).unwrap();
    assert_eq!(first.counts().total, 20);
    // A good cache is reused: the builder is not called.
    let again = Snapshot::open_or_build(&path, || panic!("rebuilt a good cache")).unwrap();
    assert_eq!(again.content_id(), first.content_id());
    // A damaged one is rebuilt.
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&path, &bytes).unwrap();
    let rebuilt = Snapshot::open_or_build(&path, make).unwrap();
    assert_eq!(rebuilt.content_id(), first.content_id());
}

#[test]
fn load_into_memory_reads_the_same_snapshot_and_refuses_damage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snap-3.ccc");
    let recs = records(400);
    write_atomic(
        &SnapshotBuilder::from_records(info(3), catalogue(), recs.clone())
            .build()
            .unwrap(),
        &path,
    )
    .unwrap();
    let mapped = Snapshot::open(&path).unwrap();
    let loaded = Snapshot::load(&path).unwrap();
    assert_eq!(loaded.content_id(), mapped.content_id());
    assert_eq!(loaded.byte_len(), mapped.byte_len());
    for r in &recs {
        assert_eq!(loaded.record(r.number).as_ref(), Some(r));
    }
    let full = fs::read(&path).unwrap();
    fs::write(&path, &full[..full.len() - 7]).unwrap();
    assert!(matches!(
        Snapshot::load(&path),
        Err(SnapshotError::Length { .. })
    ));
    let mut flipped = full.clone();
    flipped[full.len() / 2] ^= 4;
    fs::write(&path, &flipped).unwrap();
    assert!(matches!(
        Snapshot::load(&path),
        Err(SnapshotError::Checksum { .. })
    ));
    fs::write(&path, &full[..20]).unwrap();
    assert!(matches!(
        Snapshot::load(&path),
        Err(SnapshotError::Length { .. })
    ));
}

#[test]
fn certificates_with_many_models_are_probed_in_the_overflow_run() {
    let mut many = record(77, Status::Valid, 901);
    many.models = (0..40).map(|i| format!("BIG-{i}")).collect();
    let mut recs = records(30);
    recs.push(many.clone());
    let base = build(1, &recs);
    let next = Snapshot::from_bytes(
        SnapshotBuilder::from_snapshot(&base, info(2), None)
            .build()
            .unwrap(),
    )
    .unwrap();
    for snap in [&base, &next] {
        let c = snap.find(many.number).unwrap();
        for i in 0..40 {
            assert!(
                snap.covers_model(c, cccgate_core::model_key(&format!("big-{i}")).unwrap()),
                "model {i}"
            );
        }
        assert!(!snap.covers_model(c, cccgate_core::model_key("BIG-40").unwrap()));
        assert_eq!(snap.record(many.number).unwrap().models, many.models);
    }
}

#[test]
fn certificates_with_up_to_three_models_cover_each_of_them_and_no_other() {
    // Kept in the record itself (no overflow run): every count, every position.
    let mut recs = records(30);
    let models = ["A-1", "B-2", "C-3"];
    for n in 0..=3 {
        let mut r = record(80 + n as u32, Status::Valid, 901);
        r.models = models[..n].iter().map(|m| m.to_string()).collect();
        recs.push(r);
    }
    let snap = build(1, &recs);
    for r in &recs[30..] {
        let c = snap.find(r.number).unwrap();
        for m in models {
            let key = cccgate_core::model_key(m).unwrap();
            assert_eq!(
                snap.covers_model(c, key),
                r.models.iter().any(|x| x == m),
                "{m} of {:?}",
                r.models
            );
        }
        assert!(!snap.covers_model(c, cccgate_core::model_key("D-4").unwrap()));
    }
}

mod dir {
    //! `SnapshotDir`: each method on a real directory.

    use std::time::Duration;

    use super::*;
    use crate::{Change, HIGH_WATER_FILE, OpenMode, SnapshotDir, diff};

    fn bytes(sequence: u64, n: u32) -> crate::SnapshotBytes {
        let mut b = SnapshotBuilder::new(info(sequence), catalogue());
        records(n).into_iter().for_each(|r| b.upsert(r));
        b.build().unwrap()
    }

    fn names(dir: &std::path::Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn list_orders_by_sequence_and_ignores_other_files() {
        let t = tempfile::tempdir().unwrap();
        let d = SnapshotDir::new(t.path());
        for seq in [10, 2, 9] {
            write_atomic(&bytes(seq, 3), &d.snapshot_path(seq)).unwrap();
        }
        fs::write(t.path().join("snap-x.ccc"), b"").unwrap();
        fs::write(t.path().join(".snap-11.ccc.tmp-1-2-3"), b"").unwrap();
        fs::write(t.path().join("reject-9.csv"), b"").unwrap();
        let seqs: Vec<u64> = d.list().unwrap().into_iter().map(|(s, _)| s).collect();
        assert_eq!(seqs, [2, 9, 10]);
        let missing = SnapshotDir::new(t.path().join("nope"));
        assert!(matches!(missing.list(), Err(SnapshotError::Io { .. })));
        assert!(missing.list_or_empty().unwrap().is_empty());
    }

    #[test]
    fn latest_is_the_newest_valid_file_and_says_what_it_skipped() {
        let t = tempfile::tempdir().unwrap();
        let d = SnapshotDir::new(t.path());
        assert!(d.latest(OpenMode::Map).unwrap().is_none());
        write_atomic(&bytes(3, 3), &d.snapshot_path(3)).unwrap();
        // A corrupt newer file, and a valid file under the wrong name.
        fs::write(d.snapshot_path(5), b"not a snapshot").unwrap();
        write_atomic(&bytes(4, 3), &d.snapshot_path(7)).unwrap();
        let l = d.latest(OpenMode::Load).unwrap().unwrap();
        assert_eq!(l.sequence, 3);
        assert_eq!(l.snapshot.sequence(), 3);
        assert_eq!(l.path, d.snapshot_path(3));
        assert_eq!(l.skipped.len(), 2);
        assert!(
            l.skipped[0].to_string().contains("the snapshot says 4"),
            "{}",
            l.skipped[0]
        );
        assert!(matches!(l.skipped[1], SnapshotError::BadMagic { .. }));
    }

    #[test]
    fn publish_writes_rejects_then_the_snapshot_and_verifies_it() {
        let t = tempfile::tempdir().unwrap();
        let d = SnapshotDir::new(t.path().join("new"));
        let p = d
            .publish(&bytes(6, 4), Some(b"file,line\n"), OpenMode::Map)
            .unwrap();
        assert_eq!(p.path, d.snapshot_path(6));
        assert_eq!(p.snapshot.sequence(), 6);
        assert_eq!(p.snapshot.counts().total, 4);
        assert_eq!(p.reject_path.as_deref(), Some(&*d.reject_path(6)));
        assert_eq!(fs::read(d.reject_path(6)).unwrap(), b"file,line\n");
        // No temporary file is left behind; without rejects, no reject file.
        let p = d.publish(&bytes(7, 4), None, OpenMode::Load).unwrap();
        assert!(p.reject_path.is_none());
        assert_eq!(
            names(d.path()),
            ["reject-6.csv", "snap-6.ccc", "snap-7.ccc"]
        );
    }

    #[test]
    fn concurrent_writes_of_one_file_use_distinct_temporary_files() {
        let t = tempfile::tempdir().unwrap();
        let d = SnapshotDir::new(t.path());
        let b = bytes(8, 50);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| d.publish(&b, None, OpenMode::Map).unwrap());
            }
        });
        assert_eq!(names(d.path()), ["snap-8.ccc"]);
        Snapshot::open(&d.snapshot_path(8)).unwrap();
    }

    #[test]
    fn prune_keeps_the_newest_n_and_never_the_newest_or_the_one_in_force() {
        let t = tempfile::tempdir().unwrap();
        let d = SnapshotDir::new(t.path());
        for seq in 1..=5 {
            write_atomic(&bytes(seq, 2), &d.snapshot_path(seq)).unwrap();
        }
        fs::write(d.reject_path(1), b"x").unwrap();
        fs::write(d.reject_path(2), b"x").unwrap();
        fs::write(t.path().join("snap-3.ccc.sig"), b"x").unwrap();
        // Keep 2 with 1 in force: 1 stays (in force), 5 stays (newest), 2..4 go.
        let removed = d.prune(2, Some(1)).unwrap();
        assert_eq!(
            removed,
            [d.snapshot_path(2), d.snapshot_path(3), d.snapshot_path(4)]
        );
        assert_eq!(
            names(d.path()),
            ["reject-1.csv", "snap-1.ccc", "snap-5.ccc"]
        );
        // Keep 0 counts as 1: the newest is never removed.
        let removed = d.prune(0, None).unwrap();
        assert_eq!(removed, [d.snapshot_path(1)]);
        assert_eq!(names(d.path()), ["snap-5.ccc"]);
        assert!(d.prune(0, None).unwrap().is_empty());
    }

    #[test]
    fn remove_newer_keeps_up_to_the_sequence() {
        let t = tempfile::tempdir().unwrap();
        let d = SnapshotDir::new(t.path());
        for seq in 1..=3 {
            write_atomic(&bytes(seq, 2), &d.snapshot_path(seq)).unwrap();
        }
        assert_eq!(
            d.remove_newer(1).unwrap(),
            [d.snapshot_path(2), d.snapshot_path(3)]
        );
        assert_eq!(names(d.path()), ["snap-1.ccc"]);
    }

    #[test]
    fn the_high_water_mark_only_rises_and_a_bad_one_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        let d = SnapshotDir::new(t.path().join("hw"));
        assert_eq!(d.high_water().unwrap(), None);
        assert_eq!(d.raise_high_water(5).unwrap(), 5);
        assert_eq!(d.high_water().unwrap(), Some(5));
        assert_eq!(d.raise_high_water(3).unwrap(), 5);
        assert_eq!(d.high_water().unwrap(), Some(5));
        assert_eq!(d.raise_high_water(9).unwrap(), 9);
        assert_eq!(
            fs::read_to_string(d.path().join(HIGH_WATER_FILE)).unwrap(),
            "9\n"
        );
        assert_eq!(names(d.path()), [HIGH_WATER_FILE]);
        fs::write(d.path().join(HIGH_WATER_FILE), "nine").unwrap();
        let e = d.high_water().unwrap_err();
        assert!(e.to_string().contains("high-water"), "{e}");
        assert!(d.raise_high_water(10).is_err());
    }

    #[test]
    fn old_temporary_files_are_removed_and_young_ones_left() {
        let t = tempfile::tempdir().unwrap();
        let d = SnapshotDir::new(t.path());
        fs::write(t.path().join(".snap-3.ccc.tmp-1-0-5"), b"partial").unwrap();
        fs::write(t.path().join("snap-3.ccc.tmp"), b"not ours").unwrap();
        assert!(
            d.remove_temp_files(Duration::from_secs(3600))
                .unwrap()
                .is_empty()
        );
        let removed = d.remove_temp_files(Duration::ZERO).unwrap();
        assert_eq!(removed, [t.path().join(".snap-3.ccc.tmp-1-0-5")]);
        assert_eq!(names(d.path()), ["snap-3.ccc.tmp"]);
    }

    #[test]
    fn diff_lists_added_removed_and_changed_in_number_order() {
        let old = build(1, &records(4));
        let mut recs = records(5);
        recs.remove(0); // serial 1 removed
        let before = recs[0].status;
        let after = Status::ALL[(before as usize + 1) % Status::ALL.len()];
        recs[0].status = after; // serial 2 changes status
        let new = build(2, &recs);
        let d = diff(&old, &new);
        assert_eq!((d.added, d.removed, d.changed), (1, 1, 1));
        let number = |serial: usize| records(5)[serial - 1].number;
        assert_eq!(
            d.changes,
            [
                Change::Status {
                    number: number(2),
                    old_status: before,
                    status: after
                },
                Change::Added {
                    number: number(5),
                    status: records(5)[4].status
                },
                Change::Removed {
                    number: number(1),
                    old_status: records(1)[0].status
                },
            ]
        );
        assert_eq!(d.transitions[&(before, after)], 1);
        assert!(diff(&old, &old).changes.is_empty());
    }
}

#[test]
fn a_snapshot_under_another_sequence_holds_the_same_register() {
    let recs = records(700);
    let dir = tempfile::tempdir().unwrap();
    let base_path = dir.path().join(file_name(3));
    write_atomic(
        &SnapshotBuilder::from_records(info(3), catalogue(), recs.clone())
            .build()
            .unwrap(),
        &base_path,
    )
    .unwrap();
    let base = Snapshot::open(&base_path).unwrap();
    // From a mapped file (copied), from memory (patched in place) and from the file's bytes
    // read without validating the archive (patched at the root's fixed place): the same bytes.
    let unvalidated = |seq| {
        SnapshotBytes::read_unvalidated(&base_path)
            .unwrap()
            .with_sequence(seq)
    };
    for (i, bytes) in [
        Snapshot::open(&base_path).unwrap().with_sequence(9),
        Snapshot::read(&base_path).unwrap().with_sequence(10),
        unvalidated(11),
    ]
    .into_iter()
    .enumerate()
    {
        let seq = 9 + i as u64;
        assert_eq!(bytes.to_vec(), unvalidated(seq).to_vec());
        let path = dir.path().join(file_name(seq));
        write_atomic(&bytes, &path).unwrap();
        let s = Snapshot::open(&path).unwrap();
        assert_eq!(s.sequence(), seq);
        assert_ne!(s.content_id(), base.content_id());
        assert_eq!(
            (s.source(), s.generated_at(), s.built_at_unix_ms()),
            (base.source(), base.generated_at(), base.built_at_unix_ms())
        );
        assert_eq!(s.counts(), base.counts());
        assert_eq!(s.catalogue(), base.catalogue());
        assert_eq!(s.byte_len(), base.byte_len());
        for r in &recs {
            assert_eq!(s.record(r.number).as_ref(), Some(r));
        }
        // Verdicts carry the new sequence.
        let (code, number) = (recs[0].product_code.to_string(), recs[0].number.to_string());
        let l = Listing::parse("L", "M", &code, &number, "", "", day(2026, 1, 1)).unwrap();
        let policy = Policy::default();
        let (a, b) = (check(&base, &l, &policy), check(&s, &l, &policy));
        assert_eq!((a.reason, b.snapshot_sequence), (b.reason, seq));
    }
    // The base file is untouched.
    assert_eq!(Snapshot::open(&base_path).unwrap().sequence(), 3);
}

#[test]
fn an_unvalidated_read_still_refuses_a_damaged_or_short_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(file_name(3));
    let bytes = SnapshotBuilder::from_records(info(3), catalogue(), records(50))
        .build()
        .unwrap();
    let mut file = bytes.to_vec();
    let mut written = Vec::new();
    bytes.write_to(&mut written).unwrap();
    assert_eq!(written, file);
    // One flipped bit in the archive: the checksum no longer matches.
    file[HEADER_LEN + 100] ^= 1;
    std::fs::write(&path, &file).unwrap();
    assert!(matches!(
        SnapshotBytes::read_unvalidated(&path),
        Err(SnapshotError::Checksum { .. })
    ));
    // Cut short: the header's length is refused, nothing is read past the end.
    std::fs::write(&path, &bytes.to_vec()[..HEADER_LEN + 10]).unwrap();
    assert!(matches!(
        SnapshotBytes::read_unvalidated(&path),
        Err(SnapshotError::Length { .. })
    ));
    // A header and checksum that hold over an archive too short for a register: refused,
    // never patched out of bounds.
    let tiny = [7u8; 16];
    let header = crate::format::Header {
        version: crate::format::FORMAT_VERSION,
        archive_len: tiny.len() as u64,
        checksum: crate::format::checksum(&tiny),
        sequence: 3,
        built_at_unix_ms: 0,
    };
    std::fs::write(&path, [&header.encode()[..], &tiny[..]].concat()).unwrap();
    let e = SnapshotBytes::read_unvalidated(&path).unwrap_err();
    assert!(e.to_string().contains("too short"), "{e}");
}

#[test]
fn verdict_changes_list_exactly_the_certificates_whose_verdict_facts_changed() {
    let old = records(40);
    let mut new = old.clone();
    // 3: status; 7: expiry; 9: product code; 12: models (one more); 15: removed; 41: added;
    // 20: only producer and applicant changed (not verdict-relevant).
    new[2].status = Status::Revoked;
    new[6].expires = day(2027, 1, 1);
    new[8].product_code = ProductCode::new(901).unwrap();
    new[11].models.push("M-12 Max".into());
    new[19].producer = "别的生产者".into();
    new[19].applicant = "别的委托人".into();
    new.remove(14);
    new.push(record(41, Status::Valid, 901));
    let a = build(1, &old);
    let b = build(2, &new);
    let changes = crate::verdict_changes(&a, &b);
    assert!(changes.windows(2).all(|w| w[0].number < w[1].number));
    let mut serials: Vec<u32> = changes.iter().map(|c| c.number.serial()).collect();
    serials.sort_unstable();
    assert_eq!(serials, [3, 7, 9, 12, 15, 41]);
    let by = |s: u32| changes.iter().find(|c| c.number.serial() == s).unwrap();
    assert_eq!(by(3).after.unwrap().status, Status::Revoked);
    assert_eq!(by(3).before.unwrap().status, old[2].status);
    assert!(by(15).after.is_none() && by(15).before.is_some());
    assert!(by(41).before.is_none() && by(41).after.is_some());
    // The same pair gives the same changes; a snapshot against itself gives none.
    assert_eq!(crate::verdict_changes(&a, &b), changes);
    assert!(crate::verdict_changes(&b, &b).is_empty());
    // From the rows a delta would carry (every touched number, unsorted, repeated, with
    // unchanged ones and a number in neither): exactly the same changes, in the same order.
    let n = |serial: u32| {
        old.iter()
            .chain(&new)
            .find(|r| r.number.serial() == serial)
            .map_or(1, |r| r.number.get())
    };
    let rows = [41, 20, 3, 12, 3, 15, 9, 7, 1, 500].map(n);
    let among = crate::verdict_changes_among(&a, &b, &rows);
    assert_eq!(among, changes);
    // Rows that missed some changes give only those they name.
    let partial = crate::verdict_changes_among(&a, &b, &[n(9), n(15), 0]);
    let serials: Vec<u32> = partial.iter().map(|c| c.number.serial()).collect();
    assert_eq!(serials, [9, 15]);
}

#[test]
fn lapsed_lists_valid_certificates_expiring_in_the_range_only() {
    let mut recs = records(10);
    recs[0].status = Status::Valid;
    recs[0].expires = day(2026, 11, 28);
    recs[1].status = Status::Suspended;
    recs[1].expires = day(2026, 11, 28);
    recs[5].status = Status::Valid;
    recs[5].expires = day(2026, 11, 29);
    recs[4].status = Status::Valid;
    recs[4].expires = day(2026, 11, 27);
    let s = build(1, &recs);
    let got: Vec<u32> = crate::lapsed(&s, day(2026, 11, 28), day(2026, 11, 29))
        .iter()
        .map(|c| c.number.serial())
        .collect();
    assert_eq!(got, [1]);
    let got: Vec<u32> = crate::lapsed(&s, day(2026, 11, 27), day(2026, 11, 29))
        .iter()
        .map(|c| c.number.serial())
        .collect();
    assert_eq!(got, [1, 5]);
}
