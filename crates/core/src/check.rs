//! The decision table of `spec/verdicts.md`, as one pure function.
//!
//! [`check`] runs the rules in their order and stops at the first that matches. It reads the
//! register through the [`Register`] trait, so the same code decides against a memory-mapped
//! snapshot in production and a small map in tests. It allocates nothing: the verdict borrows
//! the producer's name from the register.

use crate::catalogue::{ConformityMode, ProductCode};
use crate::cert::{CertNumber, CertNumberError};
use crate::date::Day;
use crate::listing::Listing;
use crate::model::{ModelKey, model_key};
use crate::status::Status;
use crate::verdict::{CertFacts, Policy, Reason, Verdict};

/// A read-only certificate register the decision table can consult.
pub trait Register {
    /// A cheap handle to one certificate, valid for the register's lifetime.
    type Cert: Copy;

    /// The feed sequence of this register.
    fn sequence(&self) -> u64;

    /// The conformity mode of `code` in the catalogue in force on `day`, or `None` when the
    /// code is not in the catalogue on that day.
    fn catalogue_mode(&self, code: ProductCode, day: Day) -> Option<ConformityMode>;

    /// The certificate with this number.
    fn find(&self, number: CertNumber) -> Option<Self::Cert>;

    /// What a verdict reports of a certificate.
    fn facts(&self, cert: Self::Cert) -> CertFacts<'_>;

    /// Whether the certificate covers the model with this key.
    fn covers_model(&self, cert: Self::Cert, model: ModelKey) -> bool;

    /// A hint that `number` will be looked up soon, so the register can start fetching it
    /// from memory. The default does nothing.
    #[inline]
    fn prefetch(&self, number: CertNumber) {
        let _ = number;
    }

    /// A hint, a few listings after [`prefetch`](Self::prefetch) of its number, that this
    /// certificate (just found) will be decided soon: the register can start fetching what a
    /// verdict reads beyond the record (the producer's name, model keys kept outside the
    /// record), so that access overlaps too. The default does nothing.
    #[inline]
    fn prefetch_cert(&self, cert: Self::Cert) {
        let _ = cert;
    }
}

/// How many listings ahead [`check_all`] normalises a listing's number and asks the register
/// to prefetch its slot.
const FAR: usize = 16;
/// How many listings ahead [`check_all`] finds a certificate (its slot fetched `FAR - NEAR`
/// listings ago) and asks for what lies beyond the record.
const NEAR: usize = 8;
/// The ring of listings in flight: a power of two above `FAR`.
const RING: usize = 32;

/// Decides one listing: the first rule of the table that matches wins, and the operator's
/// policy maps its reason to a decision.
pub fn check<'r, R: Register>(
    register: &'r R,
    listing: &Listing<'_>,
    policy: &Policy,
) -> Verdict<'r> {
    let number = CertNumber::normalize(listing.certificate_number).map(|p| p.number);
    let (reason, certificate) = decide(register, listing, number);
    Verdict {
        decision: policy.decision(reason),
        reason,
        snapshot_sequence: register.sequence(),
        certificate,
    }
}

/// Decides one listing exactly as [`check`] does, its certificate number already normalised
/// and looked up: `number` is what [`CertNumber::normalize`] gives for the listing's
/// `certificate_number`, and `found` what [`Register::find`] gives for `number`. For deciding
/// the many listings that cite one certificate with one look-up (a watch pass re-decides the
/// listings of each changed certificate together).
pub fn check_found<'r, R: Register>(
    register: &'r R,
    listing: &Listing<'_>,
    policy: &Policy,
    number: CertNumber,
    found: Option<R::Cert>,
) -> Verdict<'r> {
    debug_assert_eq!(normalize(listing), Ok(number), "the listing's own number");
    let (reason, certificate) = match before_lookup(register, listing, Ok(number)) {
        Err(reason) => (reason, None),
        Ok((_, code)) => after_lookup(register, listing, code, found),
    };
    Verdict {
        decision: policy.decision(reason),
        reason,
        snapshot_sequence: register.sequence(),
        certificate,
    }
}

/// Where a listing stands in [`check_all`]'s pipeline.
#[derive(Clone, Copy)]
enum Stage<C> {
    /// Decided by a rule before the look-up (1 to 4).
    Done(Reason),
    /// Its number is to be looked up (its slot on its way into the cache).
    Lookup(CertNumber, ProductCode),
    /// Looked up: the certificate, if the register has it.
    Found(Option<C>, ProductCode),
}

#[inline]
/// Decides a run of listings, in order, exactly as [`check`] decides each, calling `each`
/// with the index and verdict of every one. This is how a batch or a stream chunk is
/// decided: as a pipeline over the run, so the dependent memory accesses of a check overlap
/// with the work on other listings instead of adding up. `FAR` (16) listings ahead, a
/// listing's catalogue rules are applied and its number normalised, and the register is
/// asked to prefetch the number's slot ([`Register::prefetch`]); `NEAR` (8) listings ahead,
/// its certificate is found (the slot is in cache by then) and the register is asked for what
/// lies beyond the record ([`Register::prefetch_cert`]); then it is decided. Listings that
/// rules 1 to 4 decide cost no memory access at all. Allocation-free.
pub fn check_all<'r, R: Register>(
    register: &'r R,
    listings: &[Listing<'_>],
    policy: &Policy,
    mut each: impl FnMut(usize, Verdict<'r>),
) {
    let n = listings.len();
    let mut ring = [Stage::<R::Cert>::Done(Reason::NotInCatalogue); RING];
    let first = |l: &Listing<'_>| match before_lookup(register, l, normalize(l)) {
        Err(reason) => Stage::Done(reason),
        Ok((number, code)) => {
            register.prefetch(number);
            Stage::Lookup(number, code)
        }
    };
    let second = |stage: &mut Stage<R::Cert>| {
        if let Stage::Lookup(number, code) = *stage {
            let cert = register.find(number);
            if let Some(c) = cert {
                register.prefetch_cert(c);
            }
            *stage = Stage::Found(cert, code);
        }
    };
    for (j, l) in listings.iter().enumerate().take(FAR) {
        ring[j] = first(l);
    }
    for stage in ring.iter_mut().take(NEAR.min(n)) {
        second(stage);
    }
    let sequence = register.sequence();
    for (i, listing) in listings.iter().enumerate() {
        if let Some(l) = listings.get(i + FAR) {
            ring[(i + FAR) % RING] = first(l);
        }
        if i + NEAR < n {
            second(&mut ring[(i + NEAR) % RING]);
        }
        let (reason, certificate) = match ring[i % RING] {
            Stage::Done(reason) => (reason, None),
            Stage::Found(cert, code) => after_lookup(register, listing, code, cert),
            // Every stage reaches `Found` before its turn; this only keeps the match total.
            Stage::Lookup(number, code) => {
                after_lookup(register, listing, code, register.find(number))
            }
        };
        each(
            i,
            Verdict {
                decision: policy.decision(reason),
                reason,
                snapshot_sequence: sequence,
                certificate,
            },
        );
    }
}

#[inline]
fn normalize(l: &Listing<'_>) -> Result<CertNumber, CertNumberError> {
    CertNumber::normalize(l.certificate_number).map(|p| p.number)
}

/// The table, given the listing's certificate number already normalised.
#[inline]
pub(crate) fn decide<'r, R: Register>(
    register: &'r R,
    listing: &Listing<'_>,
    number: Result<CertNumber, CertNumberError>,
) -> (Reason, Option<CertFacts<'r>>) {
    match before_lookup(register, listing, number) {
        Err(reason) => (reason, None),
        Ok((number, code)) => after_lookup(register, listing, code, register.find(number)),
    }
}

/// Rules 1 to 4: the reason when one of them decides, or else the number to look up and the
/// listing's product code.
#[inline]
fn before_lookup<R: Register>(
    register: &R,
    listing: &Listing<'_>,
    number: Result<CertNumber, CertNumberError>,
) -> Result<(CertNumber, ProductCode), Reason> {
    // Rules 1 and 2: the catalogue in force on the event date.
    let Some(code) = listing.product_code else {
        return Err(Reason::NotInCatalogue);
    };
    match register.catalogue_mode(code, listing.event_day) {
        None => return Err(Reason::NotInCatalogue),
        Some(ConformityMode::SelfDeclaration) => return Err(Reason::SelfDeclarationProduct),
        Some(ConformityMode::Certificate) => {}
    }
    // Rules 3 and 4: the number as typed.
    match number {
        Ok(number) => Ok((number, code)),
        Err(CertNumberError::Empty) => Err(Reason::CertificateMissing),
        Err(CertNumberError::Malformed) => Err(Reason::CertificateMalformed),
    }
}

/// Rules 5 to 11, given what the look-up of the listing's number found.
#[inline]
fn after_lookup<'r, R: Register>(
    register: &'r R,
    listing: &Listing<'_>,
    code: ProductCode,
    cert: Option<R::Cert>,
) -> (Reason, Option<CertFacts<'r>>) {
    // Rule 5.
    let Some(cert) = cert else {
        return (Reason::CertificateNotFound, None);
    };
    let facts = register.facts(cert);
    // Rules 6 to 9: status, then the expiry date against the event's China-time day.
    let reason = match facts.status {
        Status::Suspended => Some(Reason::CertificateSuspended),
        Status::Revoked => Some(Reason::CertificateRevoked),
        Status::Cancelled => Some(Reason::CertificateCancelled),
        Status::Expired => Some(Reason::CertificateExpired),
        Status::Valid if facts.expires < listing.event_day => Some(Reason::CertificateExpired),
        Status::Valid => None,
    };
    if let Some(reason) = reason {
        return (reason, Some(facts));
    }
    // Rule 10.
    if facts.product_code != code {
        return (Reason::ProductMismatch, Some(facts));
    }
    // Rule 11: only when a model was given (a blank model counts as none).
    if let Some(key) = model_key(listing.model)
        && !register.covers_model(cert, key)
    {
        return (Reason::ModelNotCovered, Some(facts));
    }
    (Reason::CertificateValid, Some(facts))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::catalogue::{Catalogue, CatalogueEntry};
    use crate::verdict::Decision;

    /// A register over a map, for pinning the table without a snapshot.
    struct MapRegister {
        catalogue: Catalogue,
        certs: HashMap<u64, (Status, ProductCode, Day, Vec<ModelKey>)>,
    }

    impl Register for MapRegister {
        type Cert = u64;
        fn sequence(&self) -> u64 {
            42
        }
        fn catalogue_mode(&self, code: ProductCode, day: Day) -> Option<ConformityMode> {
            self.catalogue.in_force(code, day).map(|e| e.mode)
        }
        fn find(&self, number: CertNumber) -> Option<u64> {
            self.certs
                .contains_key(&number.get())
                .then_some(number.get())
        }
        fn facts(&self, cert: u64) -> CertFacts<'_> {
            let (status, product_code, expires, _) = &self.certs[&cert];
            CertFacts {
                number: CertNumber::from_u64(cert).unwrap(),
                status: *status,
                product_code: *product_code,
                producer: "某某电子有限公司",
                expires: *expires,
            }
        }
        fn covers_model(&self, cert: u64, model: ModelKey) -> bool {
            self.certs[&cert].3.contains(&model)
        }
    }

    fn day(y: i32, m: u32, d: u32) -> Day {
        Day::from_ymd(y, m, d).unwrap()
    }

    fn code(c: u16) -> ProductCode {
        ProductCode::new(c).unwrap()
    }

    const PC: u64 = 2021010901000001; // 0901 微型计算机, valid until 2026-11-27
    const PHONE: u64 = 2021011606000002; // 1606, valid
    const SUSPENDED: u64 = 2021010901000003;
    const REVOKED: u64 = 2021010901000004;
    const CANCELLED: u64 = 2021010901000005;
    const EXPIRED: u64 = 2021010901000006;

    fn register() -> &'static MapRegister {
        static REGISTER: std::sync::LazyLock<MapRegister> =
            std::sync::LazyLock::new(build_register);
        &REGISTER
    }

    fn build_register() -> MapRegister {
        let entry = |c: u16, mode, from: Day, until: Option<Day>| CatalogueEntry {
            code: code(c),
            name: format!("product {c:04}"),
            category_code: code(c).category(),
            category_name: "category".into(),
            mode,
            from,
            until,
        };
        let catalogue = Catalogue::new(vec![
            entry(901, ConformityMode::Certificate, day(2002, 5, 1), None),
            entry(1606, ConformityMode::Certificate, day(2002, 5, 1), None),
            // A self-declaration type.
            entry(1101, ConformityMode::SelfDeclaration, day(2020, 1, 1), None),
            // Power banks: in the catalogue from 2024-08-01 only.
            entry(1912, ConformityMode::Certificate, day(2024, 8, 1), None),
            // A type taken out of the catalogue at the 2023 revision.
            entry(
                402,
                ConformityMode::Certificate,
                day(2002, 5, 1),
                Some(day(2023, 1, 1)),
            ),
        ])
        .unwrap();
        let models = |ms: &[&str]| ms.iter().map(|m| model_key(m).unwrap()).collect::<Vec<_>>();
        let far = day(2030, 1, 1);
        let certs = HashMap::from([
            (
                PC,
                (
                    Status::Valid,
                    code(901),
                    day(2026, 11, 27),
                    models(&["X1-2026", "X1 Carbon"]),
                ),
            ),
            (PHONE, (Status::Valid, code(1606), far, models(&["P60"]))),
            (SUSPENDED, (Status::Suspended, code(901), far, vec![])),
            (REVOKED, (Status::Revoked, code(901), far, vec![])),
            (CANCELLED, (Status::Cancelled, code(901), far, vec![])),
            (EXPIRED, (Status::Expired, code(901), far, vec![])),
        ]);
        MapRegister { catalogue, certs }
    }

    fn listing<'a>(code: &str, cert: &'a str, model: &'a str, time: &str) -> Listing<'a> {
        Listing::parse("L1", "M1", code, cert, model, time, day(2026, 6, 1)).unwrap()
    }

    fn reason(code: &str, cert: &str, model: &str) -> Reason {
        check(
            register(),
            &listing(code, cert, model, ""),
            &Policy::default(),
        )
        .reason
    }

    #[test]
    fn empty_product_code_is_not_in_catalogue() {
        assert_eq!(reason("", "", ""), Reason::NotInCatalogue);
    }

    #[test]
    fn product_code_absent_from_catalogue_is_allowed() {
        let v = check(register(), &listing("9999", "", "", ""), &Policy::default());
        assert_eq!(
            (v.decision, v.reason),
            (Decision::Allow, Reason::NotInCatalogue)
        );
        assert!(v.certificate.is_none());
    }

    #[test]
    fn explain_gives_the_verdict_of_check_with_the_rule_and_the_facts_it_read() {
        use crate::explain::explain;
        let cases = [
            ("", "", "", Reason::NotInCatalogue),
            ("1101", "", "", Reason::SelfDeclarationProduct),
            ("0901", "", "", Reason::CertificateMissing),
            ("0901", "12-34", "", Reason::CertificateMalformed),
            ("0901", "2021010901999999", "", Reason::CertificateNotFound),
            ("0901", "2021010901000003", "", Reason::CertificateSuspended),
            ("0901", "2021011606000002", "", Reason::ProductMismatch),
            ("0901", "2021010901000001", "Z9", Reason::ModelNotCovered),
            (
                "0901",
                "CCC:2021-0109-0100-0001",
                "x1 carbon",
                Reason::CertificateValid,
            ),
            ("0901", "2021010901000001", "", Reason::CertificateValid),
        ];
        for (code, cert, model, want) in cases {
            let l = listing(code, cert, model, "");
            let e = explain(register(), &l, &Policy::default());
            assert_eq!(
                e.verdict,
                check(register(), &l, &Policy::default()),
                "{cert}"
            );
            assert_eq!(e.verdict.reason, want, "{code} {cert} {model}");
            assert_eq!(e.rule, want.index() + 1);
            assert_eq!(e.event_day, day(2026, 6, 1));
            assert_eq!(e.certificate, e.verdict.certificate);
        }
        let e = explain(
            register(),
            &listing("0901", "CCC:2021-0109-0100-0001", "x1 carbon", ""),
            &Policy::default(),
        );
        assert_eq!(e.catalogue_mode, Some(ConformityMode::Certificate));
        assert_eq!(e.number.map(|n| n.get()), Ok(PC));
        assert_eq!(e.model_covered, Some(true));
        assert_eq!(e.certificate.map(|c| c.expires), Some(day(2026, 11, 27)));
        let e = explain(
            register(),
            &listing("0901", "2021010901000001", "Z9", ""),
            &Policy::default(),
        );
        assert_eq!(e.model_covered, Some(false));
        let e = explain(register(), &listing("1101", "", "", ""), &Policy::default());
        assert_eq!(e.catalogue_mode, Some(ConformityMode::SelfDeclaration));
        assert_eq!(e.number, Err(CertNumberError::Empty));
        assert_eq!(e.model_covered, None);
    }

    #[test]
    fn catalogue_entry_not_yet_in_force_is_not_in_catalogue() {
        let r = register();
        let before = listing("1912", "", "", "2024-07-31T15:59:59Z"); // 23:59:59 on 07-31 in China
        let on = listing("1912", "", "", "2024-07-31T16:00:00Z"); // 00:00 on 08-01 in China
        assert_eq!(
            check(r, &before, &Policy::default()).reason,
            Reason::NotInCatalogue
        );
        assert_eq!(
            check(r, &on, &Policy::default()).reason,
            Reason::CertificateMissing
        );
    }

    #[test]
    fn catalogue_entry_past_its_end_is_not_in_catalogue() {
        let r = register();
        let in_force = listing("0402", "", "", "2022-12-31T12:00:00+08:00");
        let ended = listing("0402", "", "", "2023-01-01T00:00:00+08:00");
        assert_eq!(
            check(r, &in_force, &Policy::default()).reason,
            Reason::CertificateMissing
        );
        assert_eq!(
            check(r, &ended, &Policy::default()).reason,
            Reason::NotInCatalogue
        );
    }

    #[test]
    fn self_declaration_product_is_allowed_without_certificate() {
        let v = check(register(), &listing("1101", "", "", ""), &Policy::default());
        assert_eq!(
            (v.decision, v.reason),
            (Decision::Allow, Reason::SelfDeclarationProduct)
        );
    }

    #[test]
    fn missing_certificate_is_blocked() {
        assert_eq!(reason("0901", "", ""), Reason::CertificateMissing);
        assert_eq!(reason("0901", " 3C: ", ""), Reason::CertificateMissing);
    }

    #[test]
    fn malformed_certificate_is_blocked() {
        assert_eq!(reason("0901", "12345", ""), Reason::CertificateMalformed);
        assert_eq!(
            reason("0901", "2021010901000001(B)", ""),
            Reason::CertificateMalformed
        );
    }

    #[test]
    fn unknown_certificate_is_not_found() {
        assert_eq!(
            reason("0901", "2021010901999999", ""),
            Reason::CertificateNotFound
        );
    }

    #[test]
    fn suspended_revoked_cancelled_and_expired_statuses_are_blocked() {
        for (n, want) in [
            (SUSPENDED, Reason::CertificateSuspended),
            (REVOKED, Reason::CertificateRevoked),
            (CANCELLED, Reason::CertificateCancelled),
            (EXPIRED, Reason::CertificateExpired),
        ] {
            let number = n.to_string();
            let v = check(
                register(),
                &listing("0901", &number, "", ""),
                &Policy::default(),
            );
            assert_eq!((v.decision, v.reason), (Decision::Block, want));
            assert_eq!(
                v.certificate.unwrap().number.get(),
                n,
                "status verdicts report the certificate"
            );
        }
    }

    #[test]
    fn status_rules_come_before_product_mismatch() {
        // Suspended certificate listed under another product code: the status wins.
        assert_eq!(
            reason("1606", &SUSPENDED.to_string(), ""),
            Reason::CertificateSuspended
        );
    }

    #[test]
    fn expiry_is_inclusive_of_its_day_in_china_time() {
        let r = register();
        let pc = PC.to_string();
        // Valid through 2026-11-27 China time: 2026-11-27T15:59:59Z is 23:59:59 there.
        let last = listing("0901", &pc, "", "2026-11-27T15:59:59Z");
        let after = listing("0901", &pc, "", "2026-11-27T16:00:00Z");
        assert_eq!(
            check(r, &last, &Policy::default()).reason,
            Reason::CertificateValid
        );
        let v = check(r, &after, &Policy::default());
        assert_eq!(
            (v.decision, v.reason),
            (Decision::Block, Reason::CertificateExpired)
        );
    }

    #[test]
    fn certificate_for_another_product_is_a_mismatch() {
        let v = check(
            register(),
            &listing("0901", &PHONE.to_string(), "", ""),
            &Policy::default(),
        );
        assert_eq!(
            (v.decision, v.reason),
            (Decision::Block, Reason::ProductMismatch)
        );
        assert_eq!(v.certificate.unwrap().product_code, code(1606));
    }

    #[test]
    fn model_not_among_the_certificates_models_is_reviewed() {
        let v = check(
            register(),
            &listing("0901", &PC.to_string(), "X2", ""),
            &Policy::default(),
        );
        assert_eq!(
            (v.decision, v.reason),
            (Decision::Review, Reason::ModelNotCovered)
        );
    }

    #[test]
    fn covered_model_typed_differently_is_valid() {
        for m in ["x1-2026", "ｘ１－２０２６", " X1 carbon ", "x1carbon"] {
            assert_eq!(
                reason("0901", &PC.to_string(), m),
                Reason::CertificateValid,
                "{m}"
            );
        }
    }

    #[test]
    fn blank_model_counts_as_not_given() {
        assert_eq!(
            reason("0901", &PC.to_string(), "  "),
            Reason::CertificateValid
        );
    }

    #[test]
    fn merchant_typing_is_normalised_before_lookup() {
        for typed in [
            "3C:2021-0109-0100-0001",
            "ＣＣＣ２０２１０１０９０１０００００１",
            "no. 2021010901000001(A1)",
        ] {
            assert_eq!(
                reason("0901", typed, "X1-2026"),
                Reason::CertificateValid,
                "{typed}"
            );
        }
    }

    #[test]
    fn valid_verdict_reports_the_certificate_and_snapshot() {
        let v = check(
            register(),
            &listing("0901", &PC.to_string(), "", ""),
            &Policy::default(),
        );
        assert_eq!(
            (v.decision, v.reason, v.snapshot_sequence),
            (Decision::Allow, Reason::CertificateValid, 42)
        );
        let c = v.certificate.unwrap();
        assert_eq!(
            (c.status, c.product_code, c.expires),
            (Status::Valid, code(901), day(2026, 11, 27))
        );
        assert_eq!(c.producer, "某某电子有限公司");
    }

    #[test]
    fn check_all_gives_every_listing_the_verdict_check_gives_it() {
        let r = register();
        let numbers = [
            PC,
            PHONE,
            SUSPENDED,
            REVOKED,
            CANCELLED,
            EXPIRED,
            2021010901999999,
        ];
        let texts: Vec<String> = (0..50)
            .map(|i| match i % 4 {
                0 => numbers[i % numbers.len()].to_string(),
                1 => format!("3C:{}", numbers[i % numbers.len()]),
                2 => String::new(),
                _ => "12345".into(),
            })
            .collect();
        let codes = ["0901", "1606", "", "1101"];
        let listings: Vec<Listing<'_>> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let model = if i % 3 == 0 { "X2" } else { "" };
                Listing::parse(
                    "L",
                    "M",
                    codes[i % codes.len()],
                    t,
                    model,
                    "",
                    day(2026, 6, 1),
                )
                .unwrap()
            })
            .collect();
        for n in [
            0,
            1,
            NEAR - 1,
            NEAR,
            NEAR + 1,
            FAR - 1,
            FAR,
            FAR + 1,
            listings.len(),
        ] {
            let mut got = Vec::new();
            check_all(r, &listings[..n], &Policy::default(), |i, v| {
                got.push((i, v))
            });
            let want: Vec<_> = listings[..n]
                .iter()
                .enumerate()
                .map(|(i, l)| (i, check(r, l, &Policy::default())))
                .collect();
            assert_eq!(got, want, "{n} listings");
        }
    }

    #[test]
    fn policy_override_changes_decision_but_not_reason() {
        let mut p = Policy::default();
        p.apply_override("CERTIFICATE_NOT_FOUND=REVIEW").unwrap();
        let v = check(register(), &listing("0901", "2021010901999999", "", ""), &p);
        assert_eq!(
            (v.decision, v.reason),
            (Decision::Review, Reason::CertificateNotFound)
        );
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn listing_fields() -> impl Strategy<Value = (String, String, String, String)> {
            let codes = prop_oneof![
                Just(String::new()),
                Just("0901".to_owned()),
                Just("1606".to_owned()),
                Just("1101".to_owned()),
                Just("1912".to_owned()),
                Just("0402".to_owned()),
                "[0-9]{4}",
            ];
            let certs = prop_oneof![
                Just(String::new()),
                prop::sample::select(vec![PC, PHONE, SUSPENDED, REVOKED, CANCELLED, EXPIRED])
                    .prop_map(|n| n.to_string()),
                "20[0-9]{14}",
                "[0-9A-Za-z（）()\\- ]{0,24}",
            ];
            let models = prop_oneof![
                Just(String::new()),
                Just("X1-2026".to_owned()),
                Just("x1 carbon".to_owned()),
                Just("P60".to_owned()),
                "[A-Za-z0-9 \\-]{0,12}",
            ];
            let times = prop_oneof![
                Just(String::new()),
                Just("2024-07-31T16:00:00Z".to_owned()),
                Just("2026-11-28T00:00:00+08:00".to_owned()),
                Just("2022-12-31T23:00:00+08:00".to_owned()),
            ];
            (codes, certs, models, times)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(300))]

            #[test]
            fn every_listing_gets_exactly_one_verdict_alone_or_in_a_batch(
                fields in prop::collection::vec(listing_fields(), 0..40),
                block_missing in any::<bool>(),
            ) {
                let mut policy = Policy::default();
                if block_missing {
                    policy.set(Reason::CertificateMissing, Decision::Review);
                }
                let listings: Vec<Listing<'_>> = fields
                    .iter()
                    .map(|(c, n, m, t)| {
                        Listing::parse("L", "M", c, n, m, t, day(2026, 6, 1)).unwrap()
                    })
                    .collect();
                let mut seen = vec![0u32; listings.len()];
                let mut order = Vec::new();
                check_all(register(), &listings, &policy, |i, v| {
                    seen[i] += 1;
                    order.push(i);
                    // The batch decides each exactly as `check` does alone.
                    assert_eq!(v, check(register(), &listings[i], &policy));
                    // So does a decision given the number's look-up.
                    if let Ok(p) = CertNumber::normalize(listings[i].certificate_number) {
                        let found = register().find(p.number);
                        assert_eq!(v, check_found(register(), &listings[i], &policy, p.number, found));
                    }
                    assert_eq!(v.decision, policy.decision(v.reason));
                    assert_eq!(v.snapshot_sequence, 42);
                });
                prop_assert!(seen.iter().all(|&n| n == 1), "{:?}", seen);
                prop_assert_eq!(order, (0..listings.len()).collect::<Vec<_>>());
            }
        }
    }
}
