//! The synthetic register: about 1.2 million certificates of all statuses, deterministic from
//! a seed, consistent with the catalogue and with the certificate-number rules.
//!
//! # Choices
//!
//! - **Statuses** ([`STATUS_SHARES`]): 37.9% `有效` (455,000 of 1.2M, the spec's figure),
//!   30% `过期失效` (five-year certificates accumulate), 24% `注销` (cancelled by the holder:
//!   discontinued products, standard changes), 4.5% `撤销` and 3.6% `暂停`.
//! - **Dates**: certificates run five years (`证书到期日期` = issue date + 5 years - 1 day).
//!   Valid and suspended ones expire after `as_of`; [`SOON_SHARE`] of the valid ones within
//!   the 30 days after it, so that listings dated in that month find some expired by date.
//!   `过期失效` ones expired before `as_of`. Issue dates of older certificates lean towards
//!   recent years (the register grows).
//! - **Numbers**: year of first issue = the issue date's year, body `01` (CQC) for most and a
//!   few other bodies by category, the product code of the record, and serials counted from 1
//!   per (year, body, product) in issue-date order, as a register numbers them. Serials stay
//!   far below [`NOT_FOUND_SERIAL_FROM`], which listings use for numbers that exist nowhere.
//!   A quarter of `1101` 汽车 certificates carry a version suffix such as `(B0)`.
//! - **Types**: valid, suspended and revoked certificates are for types that need a
//!   certificate today; cancelled and expired ones may also be for types that left the
//!   catalogue or are now self-declared (history), never for a type not yet in force when
//!   they were issued (power banks are issued from 2024-08-01 on).
//! - **Models**: 1 + a discrete Pareto tail (alpha 1.35, capped at 600): about 3 models per
//!   certificate, a few hundred certificates with hundreds.
//!
//! Records come out sorted by certificate number, as an export of the register would be.

use cccgate_core::{
    Catalogue, CertNumber, CertificateRecord, ConformityMode, Day, ProductCode, Status,
};

use crate::catalogue::{TYPES, TypeSpec, catalogue, ymd};
use crate::names::{ModelFamily, Populations};
use crate::rng::{Rng, Weighted, derive, pareto};

/// Share of each status in the register.
pub const STATUS_SHARES: [(Status, f64); 5] = [
    (Status::Valid, 0.379),
    (Status::Suspended, 0.036),
    (Status::Revoked, 0.045),
    (Status::Cancelled, 0.240),
    (Status::Expired, 0.300),
];

/// Share of valid certificates that expire within the 30 days after `as_of`.
pub const SOON_SHARE: f64 = 0.02;

/// How many days after `as_of` the "soon" certificates expire at most.
pub const SOON_DAYS: i32 = 30;

/// Serials at or above this are never issued in the synthetic register.
pub const NOT_FOUND_SERIAL_FROM: u32 = 900_000;

/// Certificate bodies: (code, name). Only `01` 中国质量认证中心 is the real code; the others
/// are real bodies whose two-digit codes here are illustrative.
pub(crate) const BODIES: [(u8, &str); 6] = [
    (1, "中国质量认证中心"),
    (5, "中国建材检验认证集团股份有限公司"),
    (8, "威凯认证检测有限公司"),
    (9, "广州赛宝认证中心服务有限公司"),
    (11, "中汽认证中心有限公司"),
    (16, "北京中轻联认证中心"),
];

/// What to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegisterSpec {
    /// Number of certificate records (default 1,200,000).
    pub certs: usize,
    /// The seed; the same spec always gives the same register.
    pub seed: u64,
    /// The day the register describes (default 2026-11-27).
    pub as_of: Day,
}

/// The default `as_of`: 2026-11-27.
pub fn default_as_of() -> Day {
    Day::from_ymd(2026, 11, 27).unwrap_or(Day::from_days(20_784))
}

impl Default for RegisterSpec {
    fn default() -> Self {
        RegisterSpec {
            certs: 1_200_000,
            seed: 1,
            as_of: default_as_of(),
        }
    }
}

/// A generated register: its catalogue, its certificates (sorted by number) and its date.
#[derive(Clone, Debug)]
pub struct SyntheticRegister {
    /// The catalogue ([`crate::catalogue()`]).
    pub catalogue: Catalogue,
    /// Every certificate, sorted by number.
    pub records: Vec<CertificateRecord>,
    /// The day the register describes.
    pub as_of: Day,
}

impl SyntheticRegister {
    /// Generates the register of `spec`.
    pub fn generate(spec: &RegisterSpec) -> Self {
        generate(spec)
    }

    /// Certificates per status, indexed by `Status::code() - 1`.
    pub fn counts(&self) -> [u64; 5] {
        count_statuses(self.records.iter())
    }
}

impl RegisterSpec {
    /// Generates this register.
    pub fn generate(&self) -> SyntheticRegister {
        generate(self)
    }
}

/// Counts records per status, indexed by `Status::code() - 1`.
pub fn count_statuses<'a>(records: impl Iterator<Item = &'a CertificateRecord>) -> [u64; 5] {
    let mut n = [0u64; 5];
    for r in records {
        n[usize::from(r.status.code() - 1)] += 1;
    }
    n
}

/// `day` plus `years` calendar years (29 February becomes 28 February).
pub(crate) fn add_years(day: Day, years: i32) -> Day {
    let (y, m, d) = day.ymd();
    Day::from_ymd(y + years, m, d)
        .or_else(|| Day::from_ymd(y + years, m, d - 1))
        .unwrap_or(day)
}

/// Expiry of a certificate issued on `issued`: five years, through the day before.
pub(crate) fn expiry_of(issued: Day) -> Day {
    Day::from_days(add_years(issued, 5).days() - 1)
}

/// The register's skeleton of one certificate, before names and serials.
#[derive(Clone, Copy, Debug)]
struct Skeleton {
    /// Year of issue and product code: the number's prefix, kept for sorting.
    year: u16,
    code: u16,
    status: Status,
    type_idx: u16,
    body_idx: u8,
    reason: u8,
    issued: i32,
    expires: i32,
    changed: i32,
    seed: u64,
}

const NO_DAY: i32 = i32::MIN;

const SUSPEND_REASONS: [&str; 5] = [
    "获证产品不符合认证要求",
    "未按规定接受监督检查",
    "证书持有人申请暂停",
    "认证依据标准换版未按期转换",
    "监督抽查不合格",
];
const REVOKE_REASONS: [&str; 4] = [
    "暂停期满未整改",
    "获证产品存在缺陷导致质量安全事故",
    "监督抽查不合格且逾期未整改",
    "出租、出借认证证书",
];
const CANCEL_REASONS: [&str; 3] = ["证书持有人申请注销", "产品停产", "认证依据标准换版未转换"];
const CANCEL_REMOVED: &str = "产品不再列入强制性产品认证目录";
const EXPIRE_REASON: &str = "证书有效期届满未申请延续";
const RESTORE_REASON: &str = "暂停期满恢复";

pub(crate) fn reason_text(status: Status, i: usize) -> &'static str {
    match status {
        Status::Valid => RESTORE_REASON,
        Status::Suspended => SUSPEND_REASONS[i % SUSPEND_REASONS.len()],
        Status::Revoked => REVOKE_REASONS[i % REVOKE_REASONS.len()],
        Status::Cancelled => CANCEL_REASONS[i % CANCEL_REASONS.len()],
        Status::Expired => EXPIRE_REASON,
    }
}

/// The body for a certificate of this category.
pub(crate) fn pick_body(rng: &mut Rng, category: u8) -> usize {
    let x = rng.below(100);
    match category {
        11 | 12 => {
            if x < 55 {
                0
            } else {
                4
            }
        }
        13 | 21 => {
            if x < 60 {
                0
            } else {
                1
            }
        }
        22 => {
            if x < 80 {
                0
            } else {
                2
            }
        }
        _ => match x {
            0..=87 => 0,
            88..=93 => 2,
            94..=97 => 3,
            _ => 5,
        },
    }
}

/// A day in `lo..=hi`, leaning towards `hi` (density rising linearly) when `recent`.
fn day_between(rng: &mut Rng, lo: i32, hi: i32, recent: bool) -> i32 {
    if hi <= lo {
        return lo;
    }
    let u = if recent {
        rng.unit().sqrt()
    } else {
        rng.unit()
    };
    lo + ((f64::from(hi - lo) + 1.0) * u).min(f64::from(hi - lo)) as i32
}

struct Plan {
    as_of: Day,
    types: Vec<TypeSpec>,
    /// Per status, the weighted choice of type (indexes into `types`) and the candidates.
    by_status: Vec<(Weighted, Vec<u16>)>,
    statuses: Weighted,
    earliest: i32,
}

impl Plan {
    fn new(as_of: Day) -> Self {
        let types: Vec<TypeSpec> = TYPES.to_vec();
        let a = as_of.days();
        let five_ago = add_years(as_of, -5).days();
        let earliest = ymd((2003, 1, 1)).days();
        let needs_cert_now = |t: &TypeSpec| {
            t.mode == ConformityMode::Certificate
                && ymd(t.from) <= as_of
                && t.until.is_none_or(|u| ymd(u).days() > a + SOON_DAYS)
        };
        let eligible = |status: Status, t: &TypeSpec| match status {
            Status::Valid | Status::Suspended | Status::Revoked => needs_cert_now(t),
            Status::Cancelled => ymd(t.from).days() < a - 60,
            Status::Expired => ymd(t.from).days().max(earliest) <= five_ago,
        };
        let mut candidates: Vec<Vec<u16>> = STATUS_SHARES
            .iter()
            .map(|&(s, _)| {
                (0..types.len() as u16)
                    .filter(|&i| eligible(s, &types[usize::from(i)]))
                    .collect()
            })
            .collect();
        // A status no type can have on this date (e.g. an `as_of` before CCC began) gets no
        // certificates; if none can have any, every type is allowed so generation still ends.
        if candidates.iter().all(Vec::is_empty) {
            candidates = vec![(0..types.len() as u16).collect(); STATUS_SHARES.len()];
        }
        let statuses = Weighted::new(
            STATUS_SHARES
                .iter()
                .zip(&candidates)
                .map(|(s, c)| if c.is_empty() { 0.0 } else { s.1 }),
        );
        let by_status = candidates
            .into_iter()
            .map(|idx| {
                let w = Weighted::new(idx.iter().map(|&i| f64::from(types[usize::from(i)].weight)));
                (w, idx)
            })
            .collect();
        Plan {
            as_of,
            types,
            by_status,
            statuses,
            earliest,
        }
    }

    fn skeleton(&self, rng: &mut Rng, seed: u64) -> Skeleton {
        let a = self.as_of.days();
        let status = STATUS_SHARES[self.statuses.sample(rng)].0;
        let (w, idx) = &self.by_status[usize::from(status.code() - 1)];
        let type_idx = idx[w.sample(rng)];
        let t = &self.types[usize::from(type_idx)];
        let from = ymd(t.from).days().max(self.earliest);
        let until = t.until.map(|u| ymd(u).days());
        let category = (t.code / 100) as u8;
        let body_idx = pick_body(rng, category) as u8;
        let reason = rng.below(16) as u8;
        let (issued, expires, changed) = match status {
            Status::Valid | Status::Suspended => {
                // Expiry first: after as_of (a few within the month after it), and late
                // enough that the issue date is not before the type entered the catalogue.
                let hi = expiry_of(self.as_of).days();
                let min_for_type = expiry_of(Day::from_days(from)).days();
                let soon = status == Status::Valid && rng.chance(SOON_SHARE);
                let (mut lo, mut top) = if soon {
                    (a + 1, a + SOON_DAYS)
                } else {
                    (a + SOON_DAYS + 1, hi)
                };
                lo = lo.max(min_for_type);
                if lo > top {
                    (lo, top) = ((a + SOON_DAYS + 1).max(min_for_type), hi);
                }
                let expires = rng.range_i32(lo, top.max(lo));
                let issued = add_years(Day::from_days(expires + 1), -5).days();
                let changed = if status == Status::Suspended || rng.chance(0.03) {
                    day_between(rng, (issued + 60).min(a), a, true)
                } else {
                    NO_DAY
                };
                (issued, expires, changed)
            }
            Status::Revoked | Status::Cancelled => {
                let last = until.map_or(a - 30, |u| (u - 60).min(a - 30));
                let issued = day_between(rng, from, last.max(from), true);
                let expires = expiry_of(Day::from_days(issued)).days();
                let end = expires.min(a).min(until.unwrap_or(a));
                let changed = day_between(rng, (issued + 30).min(end), end, false);
                (issued, expires, changed)
            }
            Status::Expired => {
                let latest = add_years(self.as_of, -5).days() - 1;
                let last = until.map_or(latest, |u| (u - 60).min(latest));
                let issued = day_between(rng, from, last.max(from), true);
                let expires = expiry_of(Day::from_days(issued)).days();
                (issued, expires, (expires + 1).min(a))
            }
        };
        Skeleton {
            year: Day::from_days(issued).ymd().0 as u16,
            code: t.code,
            status,
            type_idx,
            body_idx,
            reason,
            issued,
            expires,
            changed,
            seed,
        }
    }
}

fn generate(spec: &RegisterSpec) -> SyntheticRegister {
    let plan = Plan::new(spec.as_of);
    let mut rng = Rng::new(derive(spec.seed, 1));
    let mut skeletons: Vec<Skeleton> = (0..spec.certs)
        .map(|i| {
            let seed = derive(spec.seed, 0x1000_0000 + i as u64);
            plan.skeleton(&mut rng, seed)
        })
        .collect();
    // Serials count up per (year, body, product) in issue order, as the register numbers
    // them; sorting by that key first makes the records come out in number order.
    let key = |s: &Skeleton| (s.year, s.body_idx, s.code, s.issued, s.seed);
    skeletons.sort_unstable_by_key(key);

    let mut category_weights = [0u32; 100];
    for t in &plan.types {
        category_weights[usize::from(t.code / 100)] += t.weight;
    }
    let pops = Populations::new(derive(spec.seed, 2), spec.certs, &category_weights);

    let mut records = Vec::with_capacity(skeletons.len());
    let mut group = (0u16, 0u8, 0u16);
    let mut serial = 0u32;
    for s in &skeletons {
        let (y, body, code, _, _) = key(s);
        if (y, body, code) != group {
            group = (y, body, code);
            serial = 0;
        }
        serial += 1;
        records.push(flesh_out(&plan, &pops, s, serial));
    }
    SyntheticRegister {
        catalogue: catalogue(),
        records,
        as_of: spec.as_of,
    }
}

fn flesh_out(plan: &Plan, pops: &Populations, s: &Skeleton, serial: u32) -> CertificateRecord {
    let mut rng = Rng::new(s.seed);
    let t = &plan.types[usize::from(s.type_idx)];
    let code = ProductCode::new(t.code).unwrap_or(ProductCode::ZERO);
    let issued = Day::from_days(s.issued);
    let (year, _, _) = issued.ymd();
    let (body, body_name) = BODIES[usize::from(s.body_idx)];
    let number =
        CertNumber::from_parts(year as u16, body, code, serial).unwrap_or(CertNumber::ZERO);
    let suffix = (t.code == 1101 && rng.chance(0.25)).then(|| {
        let v = rng.below(6) as u8;
        [b"AABBBC"[usize::from(v)], b"001012"[usize::from(v)]]
    });
    let producer = &pops.producers[pops.producer(&mut rng, code.category()) as usize];
    let applicant = pops.applicant(&mut rng, producer).to_owned();
    let factory = pops.factory(&mut rng, producer).to_owned();
    let family = ModelFamily::new(&mut rng, t.code);
    let n_models = pareto(&mut rng, 1.35, 600);
    let mut models = Vec::with_capacity(n_models as usize);
    for j in 0..n_models {
        let mut m = String::with_capacity(16);
        family.write(&mut m, &producer.brand, j);
        models.push(m);
    }
    let status_reason = match (s.status, s.changed) {
        (_, NO_DAY) => String::new(),
        (Status::Cancelled, _) if t.until.is_some() && s.reason < 12 => CANCEL_REMOVED.to_owned(),
        (status, _) => reason_text(status, usize::from(s.reason)).to_owned(),
    };
    CertificateRecord {
        number,
        suffix,
        status: s.status,
        product_code: code,
        product_name: t.name.to_owned(),
        models,
        applicant,
        producer: producer.name.clone(),
        factory,
        issued,
        expires: Day::from_days(s.expires),
        status_changed: (s.changed != NO_DAY).then(|| Day::from_days(s.changed)),
        status_reason,
        body_name: body_name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn small() -> SyntheticRegister {
        RegisterSpec {
            certs: 20_000,
            seed: 7,
            ..RegisterSpec::default()
        }
        .generate()
    }

    #[test]
    fn same_spec_gives_the_same_register_and_another_seed_another() {
        let spec = RegisterSpec {
            certs: 500,
            seed: 3,
            ..RegisterSpec::default()
        };
        let a = spec.generate();
        let b = spec.generate();
        assert_eq!(a.records, b.records);
        let c = RegisterSpec { seed: 4, ..spec }.generate();
        assert_ne!(a.records, c.records);
    }

    #[test]
    fn numbers_agree_with_their_records_and_are_unique_and_sorted() {
        let r = small();
        let mut seen = HashSet::new();
        for w in r.records.windows(2) {
            assert!(w[0].number < w[1].number);
        }
        for rec in &r.records {
            assert!(seen.insert(rec.number));
            let n = rec.number;
            assert_eq!(i32::from(n.year()), rec.issued.ymd().0, "{n}");
            assert_eq!(n.product_code(), rec.product_code, "{n}");
            assert!(
                BODIES
                    .iter()
                    .any(|(b, name)| *b == n.body() && *name == rec.body_name)
            );
            assert!(n.serial() >= 1 && n.serial() < NOT_FOUND_SERIAL_FROM);
            assert!(r.catalogue.contains(rec.product_code));
            assert!(!rec.models.is_empty());
            assert!(rec.expires > rec.issued);
            assert!(rec.issued <= r.as_of);
        }
        assert!(
            r.records.iter().filter(|x| x.number.body() == 1).count() > r.records.len() * 3 / 4
        );
        assert!(r.records.iter().any(|x| x.suffix.is_some()));
        assert!(
            r.records
                .iter()
                .all(|x| x.suffix.is_none() || x.product_code.get() == 1101)
        );
    }

    #[test]
    fn statuses_follow_the_chosen_mix_and_dates_fit_them() {
        let r = small();
        let n = r.records.len() as f64;
        let counts = r.counts();
        for (s, share) in STATUS_SHARES {
            let got = counts[usize::from(s.code() - 1)] as f64 / n;
            assert!((got - share).abs() < 0.01, "{s}: {got} vs {share}");
        }
        let a = r.as_of;
        let soon_end = Day::from_days(a.days() + SOON_DAYS);
        let mut soon = 0;
        for rec in &r.records {
            match rec.status {
                Status::Valid => {
                    assert!(rec.expires > a, "{}", rec.number);
                    assert!(
                        r.catalogue
                            .in_force(rec.product_code, a)
                            .is_some_and(|e| e.mode == ConformityMode::Certificate)
                    );
                    if rec.expires <= soon_end {
                        soon += 1;
                    }
                }
                Status::Expired => {
                    assert!(rec.expires < a, "{}", rec.number);
                    assert!(rec.status_changed.is_some_and(|d| d > rec.expires));
                }
                _ => assert!(rec.status_changed.is_some() && !rec.status_reason.is_empty()),
            }
            if let Some(d) = rec.status_changed {
                assert!(d <= a && d >= rec.issued, "{}", rec.number);
            }
            let entry = r
                .catalogue
                .entries()
                .iter()
                .find(|e| e.code == rec.product_code);
            assert!(entry.is_some_and(|e| e.from <= rec.issued && e.until.is_none_or(|u| rec.issued < u)));
        }
        let valid = counts[0] as f64;
        assert!(
            (f64::from(soon) / valid - SOON_SHARE).abs() < 0.006,
            "{soon}"
        );
    }

    #[test]
    fn power_banks_are_issued_only_once_in_the_catalogue() {
        let r = small();
        let from = Day::from_ymd(2024, 8, 1).unwrap();
        let banks: Vec<_> = r
            .records
            .iter()
            .filter(|x| x.product_code.get() == 914)
            .collect();
        assert!(!banks.is_empty());
        assert!(
            banks
                .iter()
                .all(|x| x.issued >= from && x.number.year() >= 2024)
        );
    }

    #[test]
    fn models_average_a_few_with_a_long_tail() {
        let r = small();
        let total: usize = r.records.iter().map(|x| x.models.len()).sum();
        let mean = total as f64 / r.records.len() as f64;
        assert!((2.0..5.0).contains(&mean), "{mean}");
        assert!(r.records.iter().any(|x| x.models.len() >= 100));
    }

    #[test]
    fn any_as_of_gives_a_register_even_before_ccc_began() {
        for (y, m, d) in [(2001, 1, 1), (2003, 6, 1), (2007, 1, 1), (9999, 12, 31)] {
            let r = RegisterSpec {
                certs: 300,
                seed: 1,
                as_of: Day::from_ymd(y, m, d).unwrap(),
            }
            .generate();
            assert_eq!(r.records.len(), 300);
            assert!(r.records.iter().all(|x| x.number.get() != 0));
            // Listings drawn from it are valid and get exactly the reason they promise.
            let info = cccgate_snapshot::BuildInfo {
                sequence: 1,
                source: "synth".into(),
                generated_at: "2026-11-27T02:00:00+08:00".into(),
                built_at_unix_ms: 0,
            };
            let bytes = cccgate_snapshot::SnapshotBuilder::from_records(
                info,
                r.catalogue.clone(),
                r.records.clone(),
            )
            .build()
            .unwrap();
            let snap = cccgate_snapshot::Snapshot::from_bytes(bytes).unwrap();
            let policy = cccgate_core::Policy::default();
            let mut n = 0;
            for g in crate::ListingGenerator::new(&r, crate::Profile::Y2025, 1).take(500) {
                let listing = g.event.listing(r.as_of).unwrap();
                let got = cccgate_core::check(&snap, &listing, &policy).reason;
                assert_eq!(got, g.expected, "as of {y}-{m}-{d}: {:?}", g.event);
                n += 1;
            }
            assert_eq!(n, 500);
        }
    }

    #[test]
    fn expiry_is_five_years_less_a_day() {
        let d = |y, m, dd| Day::from_ymd(y, m, dd).unwrap();
        assert_eq!(expiry_of(d(2021, 11, 28)), d(2026, 11, 27));
        assert_eq!(expiry_of(d(2024, 2, 29)), d(2029, 2, 27));
        assert_eq!(add_years(d(2024, 2, 29), 1), d(2025, 2, 28));
    }
}
