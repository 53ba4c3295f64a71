//! Listing streams with a known expected reason, at millions of listings per second.
//!
//! # How a listing is made
//!
//! Each listing first draws a *case* from its [`Profile`]'s mix (a valid certificate, a
//! suspended one, a number that exists nowhere, a self-declared product ...), then builds the
//! six fields that produce it: a certificate from the matching pool of the register, the
//! product code (its own, or another one for a mismatch), a model it covers (or one it cannot
//! cover), an event time. The expected reason is the case's reason, corrected by the only two
//! rules that depend on the event day (the catalogue in force that day, and a valid
//! certificate's expiry date), so it is exact for any event window, not only the default one.
//!
//! # Choices
//!
//! - **Mix** ([`Profile::reason_shares`]): the blocked share is the published one (2021:
//!   1.283M of 81.769M checks = 1.57%; 2025: 15.25M of 310M in Jan-Nov = 4.92%), spread over
//!   the BLOCK reasons as [`BLOCK_SPLIT_2021`] / [`BLOCK_SPLIT_2025`] say; 0.8% (2021) and
//!   1.2% (2025) are REVIEW (model not covered); 8% are not CCC products (6% with no product
//!   code, 2% with a code outside the catalogue in force); 4% (2021) and 5% (2025) are
//!   self-declared products; the rest carry a valid certificate.
//! - **Merchants**: 1.718M in 2021 (published); 2.5M in 2025, our choice: checks grew about
//!   4x from 2021 (81.8M to ~340M) while marketplaces' active seller counts grew far less
//!   (about 10% a year), so checks per merchant rise from ~48 to ~136. Merchants are drawn by
//!   rank from a power law (exponent 0.9: the biggest seller has ~2.5% of all listings, the
//!   median one a handful), and ids are a scrambled rank (`M00314159`).
//! - **Certificates**: listings of valid certificates favour popular ones (30% of picks
//!   follow a power law over the pool, the rest are uniform).
//! - **Typing**: [`TYPED_SHARE`] of listings spell the certificate number and model the way
//!   merchants do (full-width digits, `3C:` / `CCC` / `NO.` prefixes, spaces and dashes, the
//!   `(B0)` suffix, lower-case or full-width models); the reason is the same after the spec's
//!   normalisation.
//! - **Event times**: RFC 3339 with `+08:00`, spread over a window of days, by default the
//!   30 days up to `as_of` and the 30 days after it ([`EventWindow::around`]): the month after
//!   is when [`crate::SOON_SHARE`] of valid certificates expire, so "expired by date" happens.
//!   [`ListingGenerator::with_event_time`]`(None)` leaves `event_time` empty (the gateway uses
//!   the day it receives the listing); the expected reasons are then those of a listing
//!   received on `as_of`, and no listing is built to depend on the day, so they hold for any
//!   receiving day up to `as_of + 30` on which the catalogue is the same (for the default
//!   register: from 2024-08-01, when power banks entered, to 2026-12-27).
//!
//! # Speed
//!
//! [`ListingGenerator::fill`] reuses the six strings of the listing it is given and writes
//! digits by hand; the register is read through compact pools built once (number, expiry,
//! code and up to two model texts per certificate), so a listing costs a few random draws,
//! one or two cache misses and about 100 bytes of writes. [`ListingGenerator::shards`] splits
//! a stream into independent deterministic shards, one per sender thread.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use cccgate_core::{
    CertificateRecord, ConformityMode, Day, ListingEvent, ProductCode, Reason, Status,
};

use crate::catalogue::TYPES;
use crate::names::{NOT_COVERED, full_width};
use crate::register::{NOT_FOUND_SERIAL_FROM, SOON_DAYS, SyntheticRegister};
use crate::rng::{Rng, Weighted, Zipf, derive};

/// Share of listings whose number and model are typed the way merchants type.
pub const TYPED_SHARE: f64 = 0.10;

/// A year of load, as published (and, for 2025, extrapolated) by the regulator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Profile {
    /// 2021: 81.769M checks, 1.718M merchants, 1.283M intercepted.
    Y2021,
    /// 2025: 310M checks in January to November (about 340M for the year), 15.25M blocked.
    Y2025,
}

/// How the 2021 blocked share is split over the BLOCK cases, in percent of it: missing,
/// malformed, not found, suspended, revoked, cancelled, expired by status, expired by date,
/// product mismatch.
pub const BLOCK_SPLIT_2021: [f64; 9] = [22.0, 13.0, 22.0, 8.0, 5.0, 10.0, 9.0, 3.0, 8.0];
/// The same for 2025: fewer missing numbers (platforms require one), more mismatches (a
/// real certificate of another product, the commoner fraud once numbers are checked).
pub const BLOCK_SPLIT_2025: [f64; 9] = [18.0, 10.0, 22.0, 7.0, 5.0, 9.0, 10.0, 3.0, 16.0];

impl Profile {
    /// Both profiles.
    pub const ALL: [Profile; 2] = [Profile::Y2021, Profile::Y2025];

    /// The calendar year.
    pub const fn year(self) -> i32 {
        match self {
            Profile::Y2021 => 2021,
            Profile::Y2025 => 2025,
        }
    }

    /// Certificate checks in the year (2025: 310M for Jan-Nov scaled by 12/11, rounded).
    pub const fn checks(self) -> u64 {
        match self {
            Profile::Y2021 => 81_769_000,
            Profile::Y2025 => 340_000_000,
        }
    }

    /// Distinct merchants (2025: our estimate, see the module doc).
    pub const fn merchants(self) -> u64 {
        match self {
            Profile::Y2021 => 1_718_000,
            Profile::Y2025 => 2_500_000,
        }
    }

    /// Share of listings blocked, as published.
    pub fn blocked_share(self) -> f64 {
        match self {
            Profile::Y2021 => 1_283_000.0 / 81_769_000.0,
            Profile::Y2025 => 15_250_000.0 / 310_000_000.0,
        }
    }

    /// Share of listings held for review (model not covered).
    pub const fn review_share(self) -> f64 {
        match self {
            Profile::Y2021 => 0.008,
            Profile::Y2025 => 0.012,
        }
    }

    /// Share of each reason in the stream, indexed by [`Reason::index`]; sums to 1. With an
    /// empty event time the "expired by date" share moves to "expired by status", so the
    /// `CERTIFICATE_EXPIRED` share is the same.
    pub fn reason_shares(self) -> [f64; Reason::COUNT] {
        let mut out = [0.0; Reason::COUNT];
        for (case, share) in self.case_shares() {
            out[case.reason().index()] += share;
        }
        out
    }

    fn case_shares(self) -> [(Case, f64); Case::COUNT] {
        let split = match self {
            Profile::Y2021 => BLOCK_SPLIT_2021,
            Profile::Y2025 => BLOCK_SPLIT_2025,
        };
        let total: f64 = split.iter().sum();
        let b = |i: usize| self.blocked_share() * split[i] / total;
        let self_declared = match self {
            Profile::Y2021 => 0.04,
            Profile::Y2025 => 0.05,
        };
        let other = 0.06 + 0.02 + self_declared + self.review_share() + self.blocked_share();
        [
            (Case::NoProductCode, 0.06),
            (Case::CodeNotInCatalogue, 0.02),
            (Case::SelfDeclared, self_declared),
            (Case::Missing, b(0)),
            (Case::Malformed, b(1)),
            (Case::NotFound, b(2)),
            (Case::Suspended, b(3)),
            (Case::Revoked, b(4)),
            (Case::Cancelled, b(5)),
            (Case::ExpiredStatus, b(6)),
            (Case::ExpiredByDate, b(7)),
            (Case::Mismatch, b(8)),
            (Case::NotCovered, self.review_share()),
            (Case::Valid, 1.0 - other),
        ]
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.year())
    }
}

/// A profile name that is neither `2021` nor `2025`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown profile {0:?}: expected 2021 or 2025")]
pub struct ProfileError(pub String);

impl FromStr for Profile {
    type Err = ProfileError;
    fn from_str(s: &str) -> Result<Self, ProfileError> {
        match s.trim() {
            "2021" | "y2021" | "Y2021" => Ok(Profile::Y2021),
            "2025" | "y2025" | "Y2025" => Ok(Profile::Y2025),
            _ => Err(ProfileError(s.to_owned())),
        }
    }
}

/// What a listing is built to show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Case {
    NoProductCode,
    CodeNotInCatalogue,
    SelfDeclared,
    Missing,
    Malformed,
    NotFound,
    Suspended,
    Revoked,
    Cancelled,
    ExpiredStatus,
    ExpiredByDate,
    Mismatch,
    NotCovered,
    Valid,
}

impl Case {
    const COUNT: usize = 14;

    const fn reason(self) -> Reason {
        match self {
            Case::NoProductCode | Case::CodeNotInCatalogue => Reason::NotInCatalogue,
            Case::SelfDeclared => Reason::SelfDeclarationProduct,
            Case::Missing => Reason::CertificateMissing,
            Case::Malformed => Reason::CertificateMalformed,
            Case::NotFound => Reason::CertificateNotFound,
            Case::Suspended => Reason::CertificateSuspended,
            Case::Revoked => Reason::CertificateRevoked,
            Case::Cancelled => Reason::CertificateCancelled,
            Case::ExpiredStatus | Case::ExpiredByDate => Reason::CertificateExpired,
            Case::Mismatch => Reason::ProductMismatch,
            Case::NotCovered => Reason::ModelNotCovered,
            Case::Valid => Reason::CertificateValid,
        }
    }
}

/// The days event times fall on: `first..=last`, China time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventWindow {
    /// First day.
    pub first: Day,
    /// Last day (inclusive).
    pub last: Day,
}

impl EventWindow {
    /// The default: the 30 days ending on `as_of` and the 30 days after it, kept within the
    /// years an RFC 3339 event time can write (0001..=9999).
    pub fn around(as_of: Day) -> Self {
        let lowest = Day::from_ymd(1, 1, 1).expect("a real date").days();
        let highest = Day::from_ymd(9999, 12, 31).expect("a real date").days();
        EventWindow {
            first: Day::from_days((as_of.days() - 29).clamp(lowest, highest)),
            last: Day::from_days((as_of.days() + SOON_DAYS).clamp(lowest, highest)),
        }
    }

    /// A single day.
    pub fn day(day: Day) -> Self {
        EventWindow {
            first: day,
            last: day,
        }
    }
}

/// One generated listing and the reason the gateway must give it (default policy, against a
/// snapshot of the same register). `Default` is an empty listing, to hand to
/// [`ListingGenerator::fill`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratedListing {
    /// The listing event, as a marketplace sends it.
    pub event: ListingEvent,
    /// The reason `cccgate_core::check` returns for it.
    pub expected: Reason,
}

impl Default for GeneratedListing {
    fn default() -> Self {
        GeneratedListing {
            event: ListingEvent::default(),
            expected: Reason::NotInCatalogue,
        }
    }
}

/// Bytes of model text a pool entry holds inline.
const INLINE_MODELS: usize = 46;

/// A certificate in a pool: what a listing needs of it, packed into one cache line with up
/// to two of its models inline, so picking a certificate costs one cache miss, not two (the
/// misses dominated the generator's profile).
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
struct PoolCert {
    number: u64,
    expires: i32,
    code: u16,
    /// Version suffix, or `[0, 0]`.
    suffix: [u8; 2],
    /// Lengths of the first and second model in `models` (0: none).
    model_len: [u8; 2],
    models: [u8; INLINE_MODELS],
}

/// Pools, indexes into `certs`.
const VALID_LONG: usize = 0;
const VALID_SOON: usize = 1;
const SUSPENDED: usize = 2;
const REVOKED: usize = 3;
const CANCELLED: usize = 4;
const EXPIRED: usize = 5;
const POOLS: usize = 6;

/// Everything a stream reads, built once per register and shared by its shards.
#[derive(Debug)]
struct Tables {
    as_of: Day,
    certs: Vec<PoolCert>,
    /// Ranges of `certs`, one per pool; each pool is in a shuffled order so power-law
    /// popularity does not follow the number order.
    pools: [(u32, u32); POOLS],
    popular: [Zipf; POOLS],
    /// All numbers of the register, sorted: to make sure "not found" numbers are.
    numbers: Vec<u64>,
    /// Product codes that need a certificate today, weighted by popularity.
    cert_codes: Vec<u16>,
    cert_code_pick: Weighted,
    /// Self-declared product codes, weighted.
    sd_codes: Vec<u16>,
    sd_code_pick: Weighted,
    /// Codes that are not in the catalogue in force: removed types and never-listed codes.
    nic_codes: Vec<u16>,
    /// Per product code 0..=9999, its catalogue entries as (from, until, mode): the
    /// catalogue's `in_force` without the search, on the per-listing path.
    modes: Vec<Vec<(i32, i32, ConformityMode)>>,
}

/// Codes that have never been in the catalogue (shaped like real ones).
const NEVER_LISTED: [u16; 6] = [1501, 1701, 1999, 2301, 2401, 9901];

impl Tables {
    fn new(register: &SyntheticRegister, seed: u64) -> Self {
        let as_of = register.as_of;
        let catalogue = register.catalogue.clone();
        let needs_cert = |code: ProductCode| {
            catalogue
                .in_force(code, as_of)
                .is_some_and(|e| e.mode == ConformityMode::Certificate)
        };
        let mut by_pool: [Vec<&CertificateRecord>; POOLS] = Default::default();
        let soon_end = as_of.days() + SOON_DAYS;
        for r in &register.records {
            if !needs_cert(r.product_code) {
                continue;
            }
            let pool = match r.status {
                Status::Valid if r.expires.days() > soon_end => VALID_LONG,
                Status::Valid if r.expires > as_of => VALID_SOON,
                Status::Valid => continue,
                Status::Suspended => SUSPENDED,
                Status::Revoked => REVOKED,
                Status::Cancelled => CANCELLED,
                Status::Expired => EXPIRED,
            };
            by_pool[pool].push(r);
        }
        let mut rng = Rng::new(derive(seed, 0x7ab1e5));
        let mut certs = Vec::new();
        let mut pools = [(0u32, 0u32); POOLS];
        for (p, records) in by_pool.iter_mut().enumerate() {
            // Fisher-Yates, so the popular head of the power law is spread over the register.
            for i in (1..records.len()).rev() {
                records.swap(i, rng.index(i + 1));
            }
            let start = certs.len() as u32;
            for r in records.iter() {
                let mut models = [0u8; INLINE_MODELS];
                let mut model_len = [0u8; 2];
                let mut used = 0;
                for (slot, m) in r.models.iter().take(2).enumerate() {
                    // Models that do not fit are left out (a listing then gives no model).
                    if used + m.len() > INLINE_MODELS {
                        break;
                    }
                    models[used..used + m.len()].copy_from_slice(m.as_bytes());
                    model_len[slot] = m.len() as u8;
                    used += m.len();
                }
                certs.push(PoolCert {
                    number: r.number.get(),
                    expires: r.expires.days(),
                    code: r.product_code.get(),
                    suffix: r.suffix.unwrap_or([0, 0]),
                    model_len,
                    models,
                });
            }
            pools[p] = (start, certs.len() as u32);
        }
        let popular = pools.map(|(a, b)| Zipf::new(u64::from(b - a).max(1), 1.0));
        let mut numbers: Vec<u64> = register.records.iter().map(|r| r.number.get()).collect();
        numbers.sort_unstable();

        let weight = |code: u16| {
            TYPES
                .iter()
                .find(|t| t.code == code)
                .map_or(5.0, |t| f64::from(t.weight))
        };
        let mut cert_codes = Vec::new();
        let mut sd_codes = Vec::new();
        let mut nic_codes: Vec<u16> = NEVER_LISTED
            .iter()
            .copied()
            .filter(|&c| ProductCode::new(c).is_some_and(|p| !catalogue.contains(p)))
            .collect();
        for e in catalogue.entries() {
            match catalogue.in_force(e.code, as_of).map(|e| e.mode) {
                Some(ConformityMode::Certificate) => cert_codes.push(e.code.get()),
                Some(ConformityMode::SelfDeclaration) => sd_codes.push(e.code.get()),
                None => nic_codes.push(e.code.get()),
            }
        }
        for v in [&mut cert_codes, &mut sd_codes, &mut nic_codes] {
            v.sort_unstable();
            v.dedup();
        }
        let mut modes = vec![Vec::new(); 10_000];
        for e in catalogue.entries() {
            let until = e.until.map_or(i32::MAX, Day::days);
            if let Some(v) = modes.get_mut(usize::from(e.code.get())) {
                v.push((e.from.days(), until, e.mode));
            }
        }
        let cert_code_pick = Weighted::new(cert_codes.iter().map(|&c| weight(c)));
        let sd_code_pick = Weighted::new(sd_codes.iter().map(|&c| weight(c)));
        Tables {
            as_of,
            certs,
            pools,
            popular,
            numbers,
            cert_codes,
            cert_code_pick,
            sd_codes,
            sd_code_pick,
            nic_codes,
            modes,
        }
    }

    /// The index in `certs` of a certificate from `pool`, if the pool has any. Only the
    /// index: the entry is loaded later, together with others (see [`Plan`]).
    fn pick(&self, rng: &mut Rng, pool: usize, skewed: bool) -> Option<u32> {
        let (a, b) = self.pools[pool];
        if a == b {
            return None;
        }
        let i = if skewed && rng.chance(0.3) {
            self.popular[pool].sample(rng) as u32
        } else {
            rng.below(u64::from(b - a)) as u32
        };
        Some(a + i)
    }

    /// Model `which` (0 or 1; the first if there is no second) of a pooled certificate.
    fn model(c: &PoolCert, which: usize) -> &str {
        let first = usize::from(c.model_len[0]);
        let range = if which == 1 && c.model_len[1] > 0 {
            first..first + usize::from(c.model_len[1])
        } else {
            0..first
        };
        // Whole models were copied in, so the bytes are UTF-8.
        std::str::from_utf8(&c.models[range]).unwrap_or("")
    }

    /// The conformity mode of `code` in the catalogue in force on `day`, like
    /// `Catalogue::in_force` (from inclusive, until exclusive).
    #[inline]
    fn mode_on(&self, code: u16, day: Day) -> Option<ConformityMode> {
        let d = day.days();
        self.modes
            .get(usize::from(code))?
            .iter()
            .find(|(from, until, _)| *from <= d && d < *until)
            .map(|e| e.2)
    }
}

/// What the next listing will be, drawn ahead of time.
///
/// Picking a certificate at random from a pool of a million is a cache miss; drawing
/// [`PLAN_AHEAD`] plans at once and then loading their certificates in one tight loop lets
/// those misses overlap instead of queueing one per listing.
#[derive(Clone, Copy, Debug)]
struct Plan {
    case: Case,
    day: Day,
    typed: bool,
    index: Option<u32>,
    cert: Option<PoolCert>,
}

/// Listings planned at once.
const PLAN_AHEAD: usize = 32;

/// A deterministic, endless stream of listing events with their expected reasons.
#[derive(Clone, Debug)]
pub struct ListingGenerator {
    tables: Arc<Tables>,
    profile: Profile,
    seed: u64,
    rng: Rng,
    cases: Weighted,
    case_list: [Case; Case::COUNT],
    merchants: Zipf,
    merchant_count: u64,
    merchant_mult: u64,
    window: Option<EventWindow>,
    /// `YYYY-MM-DDT` of each day of the window (up to a few years of days).
    day_prefixes: Vec<String>,
    shard: Option<u32>,
    next_id: u64,
    id_prefix: String,
    /// Plans drawn ahead, used from the back.
    plans: Vec<Plan>,
}

impl ListingGenerator {
    /// A stream over `register` with `profile`'s mix and merchants, deterministic from
    /// `seed`. Building the pools reads the whole register once (well under a second for
    /// 1.2M certificates in release).
    pub fn new(register: &SyntheticRegister, profile: Profile, seed: u64) -> Self {
        let tables = Arc::new(Tables::new(register, seed));
        Self::with_tables(tables, profile, seed, None)
    }

    fn with_tables(tables: Arc<Tables>, profile: Profile, seed: u64, shard: Option<u32>) -> Self {
        let shares = profile.case_shares();
        let merchant_count = profile.merchants();
        let rng_seed = match shard {
            None => derive(seed, 0x5eed),
            Some(i) => derive(derive(seed, 0x5a4d), u64::from(i)),
        };
        let yy = profile.year() % 100;
        let id_prefix = match shard {
            None => format!("L{yy}-"),
            Some(i) => format!("L{yy}-{i}-"),
        };
        let window = Some(EventWindow::around(tables.as_of));
        ListingGenerator {
            profile,
            seed,
            rng: Rng::new(rng_seed),
            cases: Weighted::new(shares.iter().map(|s| s.1)),
            case_list: shares.map(|s| s.0),
            merchants: Zipf::new(merchant_count, 0.9),
            merchant_count,
            merchant_mult: coprime_multiplier(merchant_count),
            day_prefixes: window.map(prefixes).unwrap_or_default(),
            window,
            shard,
            next_id: 0,
            id_prefix,
            plans: Vec::with_capacity(PLAN_AHEAD),
            tables,
        }
    }

    /// Event times within `window`, or `None` to leave `event_time` empty (the gateway then
    /// uses the day it receives the listing; expected reasons are those of `as_of` and hold
    /// for any receiving day up to `as_of + 30` with the same catalogue: for the default
    /// register, 2024-08-01 to 2026-12-27).
    pub fn with_event_time(mut self, window: Option<EventWindow>) -> Self {
        self.window = window;
        self.day_prefixes = window.map(prefixes).unwrap_or_default();
        self.plans.clear();
        self
    }

    /// The profile.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// The register's `as_of`.
    pub fn as_of(&self) -> Day {
        self.tables.as_of
    }

    /// Which shard of its stream this generator is (`None`: the unsharded stream).
    pub fn shard_index(&self) -> Option<u32> {
        self.shard
    }

    /// Listings generated so far by this generator (its next listing number).
    pub fn generated(&self) -> u64 {
        self.next_id
    }

    /// Shard `index` of this stream: an independent deterministic stream (its own random
    /// sequence, its own listing ids `L21-<index>-...`, which never collide with another
    /// shard's or the unsharded stream's), sharing this generator's register pools.
    pub fn shard(&self, index: u32) -> ListingGenerator {
        Self::with_tables(
            Arc::clone(&self.tables),
            self.profile,
            self.seed,
            Some(index),
        )
        .with_event_time(self.window)
    }

    /// `n` shards, `0..n`: one per sender thread.
    pub fn shards(&self, n: u32) -> Vec<ListingGenerator> {
        (0..n).map(|i| self.shard(i)).collect()
    }

    /// Writes the next listing into `out`, reusing its strings' buffers.
    pub fn fill(&mut self, out: &mut GeneratedListing) {
        let e = &mut out.event;
        e.listing_id.clear();
        e.merchant_id.clear();
        e.product_code.clear();
        e.certificate_number.clear();
        e.model.clear();
        e.event_time.clear();

        e.listing_id.push_str(&self.id_prefix);
        push_digits(&mut e.listing_id, self.next_id + 1, 10);
        self.next_id += 1;

        let rank = self.merchants.sample(&mut self.rng);
        let id = (rank.wrapping_mul(self.merchant_mult)) % self.merchant_count;
        e.merchant_id.push('M');
        push_digits(&mut e.merchant_id, id, 8);

        if self.plans.is_empty() {
            self.plan_ahead();
        }
        let Some(plan) = self.plans.pop() else {
            return; // plan_ahead always plans PLAN_AHEAD > 0 listings
        };
        let (expected, day) = self.build(plan, e);
        if let Some(w) = self.window {
            let sec = self.rng.below(86_400) as u32;
            // Day prefixes of the window are cached; a day outside it (an expired-by-date
            // listing moved past the window's end cannot be, but a caller's odd window may)
            // is formatted on the spot.
            match self
                .day_prefixes
                .get((day.days() - w.first.days()) as usize)
            {
                Some(p) if day >= w.first => push_event_time(&mut e.event_time, p, sec),
                _ => push_event_time(&mut e.event_time, &day_prefix(day), sec),
            }
        }
        out.expected = expected;
    }

    /// Draws the next [`PLAN_AHEAD`] plans: cases, days and certificate indexes first, then
    /// the certificates themselves, so their cache misses overlap.
    fn plan_ahead(&mut self) {
        let t = &*self.tables;
        let rng = &mut self.rng;
        for _ in 0..PLAN_AHEAD {
            let mut case = self.case_list[self.cases.sample(rng)];
            if case == Case::ExpiredByDate && self.window.is_none() {
                case = Case::ExpiredStatus;
            }
            let day = match self.window {
                Some(w) => {
                    Day::from_days(rng.range_i32(w.first.days(), w.last.days().max(w.first.days())))
                }
                None => t.as_of,
            };
            let typed = rng.chance(TYPED_SHARE);
            // The certificate the listing refers to, if the case needs one.
            let pool = match case {
                Case::Valid | Case::NotCovered | Case::Mismatch => Some(VALID_LONG),
                Case::Suspended => Some(SUSPENDED),
                Case::Revoked => Some(REVOKED),
                Case::Cancelled => Some(CANCELLED),
                Case::ExpiredStatus => Some(EXPIRED),
                Case::ExpiredByDate => Some(VALID_SOON),
                _ => None,
            };
            let index = pool.and_then(|p| t.pick(rng, p, p == VALID_LONG));
            self.plans.push(Plan {
                case,
                day,
                typed,
                index,
                cert: None,
            });
        }
        for p in &mut self.plans {
            p.cert = p.index.and_then(|i| t.certs.get(i as usize).copied());
        }
        // Used from the back: reverse so listings come in the order planned.
        self.plans.reverse();
    }

    /// Builds the planned case's fields; returns the expected reason and the event day (which
    /// the expired-by-date case moves past the certificate's expiry).
    fn build(&mut self, plan: Plan, e: &mut ListingEvent) -> (Reason, Day) {
        let Plan {
            case,
            day,
            typed,
            cert,
            ..
        } = plan;
        let t = &*self.tables;
        let rng = &mut self.rng;
        let mut day = day;
        let Some(c) = cert else {
            // A case without a certificate, or a register too small to have its pool: one
            // of the cases that need no certificate.
            let case = match case {
                Case::NoProductCode
                | Case::CodeNotInCatalogue
                | Case::SelfDeclared
                | Case::Missing
                | Case::Malformed
                | Case::NotFound => case,
                _ => Case::NotFound,
            };
            return (self.build_without_cert(case, day, typed, e), day);
        };
        match case {
            Case::ExpiredByDate => {
                // An event day after the certificate's last valid day, inside the window if
                // the window reaches past it (else the drawn day stands, and the day rules
                // below say what it gives).
                if let Some(w) = self.window {
                    let lo = (c.expires + 1).max(w.first.days());
                    if lo <= w.last.days() {
                        day = Day::from_days(rng.range_i32(lo, w.last.days()));
                    }
                }
            }
            Case::Mismatch => {
                let mut code = c.code;
                for _ in 0..8 {
                    code = t.cert_codes[t.cert_code_pick.sample(rng)];
                    if code != c.code {
                        break;
                    }
                }
                if code == c.code {
                    // A catalogue with a single certificate type: no mismatch possible.
                    return (self.build_without_cert(Case::NotFound, day, typed, e), day);
                }
                push_code(&mut e.product_code, code);
            }
            _ => {}
        }
        if e.product_code.is_empty() {
            push_code(&mut e.product_code, c.code);
        }
        push_number(&mut e.certificate_number, rng, c.number, c.suffix, typed);
        match case {
            Case::NotCovered => {
                let m = Tables::model(&c, rng.index(2));
                push_model(&mut e.model, rng, m, typed);
                e.model.push_str(rng.pick(&NOT_COVERED));
            }
            _ => {
                if rng.chance(0.65) {
                    let m = Tables::model(&c, rng.index(2));
                    push_model(&mut e.model, rng, m, typed);
                }
            }
        }
        let listed = ProductCode::parse(&e.product_code).map_or(0, ProductCode::get);
        // Cases on a valid certificate start from what a valid certificate gives; the
        // expiry rule below makes "expired by date" what it is.
        let status_rule = !matches!(
            case,
            Case::Valid | Case::NotCovered | Case::Mismatch | Case::ExpiredByDate
        );
        let mut reason = match case {
            Case::ExpiredByDate => Reason::CertificateValid,
            _ => case.reason(),
        };
        // The rules that depend on the event day: the catalogue, then a valid certificate's
        // expiry date (status rules come first and do not depend on it).
        match t.mode_on(listed, day) {
            None => reason = Reason::NotInCatalogue,
            Some(ConformityMode::SelfDeclaration) => reason = Reason::SelfDeclarationProduct,
            Some(ConformityMode::Certificate) => {
                if !status_rule && c.expires < day.days() {
                    reason = Reason::CertificateExpired;
                }
            }
        }
        (reason, day)
    }

    fn build_without_cert(
        &mut self,
        case: Case,
        day: Day,
        typed: bool,
        e: &mut ListingEvent,
    ) -> Reason {
        e.product_code.clear();
        e.certificate_number.clear();
        e.model.clear();
        let near = match case {
            Case::Malformed | Case::NotFound => self.not_found_number(),
            _ => 0,
        };
        let t = &*self.tables;
        let rng = &mut self.rng;
        let code = match case {
            Case::NoProductCode => None,
            Case::CodeNotInCatalogue if !t.nic_codes.is_empty() => Some(rng.pick(&t.nic_codes)),
            Case::SelfDeclared if !t.sd_codes.is_empty() => {
                Some(t.sd_codes[t.sd_code_pick.sample(rng)])
            }
            Case::Missing | Case::Malformed | Case::NotFound if !t.cert_codes.is_empty() => {
                Some(t.cert_codes[t.cert_code_pick.sample(rng)])
            }
            _ => None,
        };
        // A code chosen to be outside the catalogue (or self-declared) may not be so on a
        // day of a caller's window (a removed type before 2023): then send no code at all.
        let mut mode = code.and_then(|c| t.mode_on(c, day));
        let code = match (case, mode) {
            (Case::CodeNotInCatalogue, Some(_))
            | (Case::SelfDeclared, None | Some(ConformityMode::Certificate)) => {
                mode = None;
                None
            }
            _ => code,
        };
        if let Some(code) = code {
            push_code(&mut e.product_code, code);
        }
        match case {
            Case::Missing => {
                const BLANK: [&str; 8] = ["", "", "", " ", "3C:", "CCC", "NO.", " - "];
                e.certificate_number
                    .push_str(if typed { rng.pick(&BLANK) } else { "" });
            }
            Case::Malformed => push_malformed(&mut e.certificate_number, rng, near),
            Case::NotFound => push_number(&mut e.certificate_number, rng, near, [0, 0], typed),
            _ => {
                // Often nothing, sometimes a number anyway: rules 1 and 2 come first.
                if rng.chance(0.2) && !t.numbers.is_empty() {
                    let n = t.numbers[rng.index(t.numbers.len())];
                    push_number(&mut e.certificate_number, rng, n, [0, 0], typed);
                }
            }
        }
        if rng.chance(0.5) {
            push_model_like(&mut e.model, rng);
        }
        match mode {
            None => Reason::NotInCatalogue,
            Some(ConformityMode::SelfDeclaration) => Reason::SelfDeclarationProduct,
            Some(ConformityMode::Certificate) => match case {
                Case::Missing => Reason::CertificateMissing,
                Case::Malformed => Reason::CertificateMalformed,
                _ => Reason::CertificateNotFound,
            },
        }
    }

    /// A well-formed number that is in no record: a real year, body and product code with a
    /// serial above any the register issues; checked against the register all the same.
    #[allow(clippy::inconsistent_digit_grouping)] // year, body, product, serial
    fn not_found_number(&mut self) -> u64 {
        let t = &*self.tables;
        for _ in 0..16 {
            let base = if t.certs.is_empty() {
                2021_01_0901_000000u64 // any shape will do for an empty register
            } else {
                t.certs[self.rng.index(t.certs.len())].number
            };
            let serial = u64::from(NOT_FOUND_SERIAL_FROM)
                + self.rng.below(u64::from(1_000_000 - NOT_FOUND_SERIAL_FROM));
            let n = base - base % 1_000_000 + serial;
            if t.numbers.binary_search(&n).is_err() {
                return n;
            }
        }
        // Year 1999 predates CCC: no register has it.
        1999_01_0901_999_999
    }
}

/// The cached `YYYY-MM-DDT` prefixes of a window's days (none for windows over ~10 years).
fn prefixes(w: EventWindow) -> Vec<String> {
    let n = w.last.days() - w.first.days() + 1;
    if !(1..=4_000).contains(&n) {
        return Vec::new();
    }
    (w.first.days()..=w.last.days())
        .map(|d| day_prefix(Day::from_days(d)))
        .collect()
}

impl Iterator for ListingGenerator {
    type Item = GeneratedListing;

    fn next(&mut self) -> Option<GeneratedListing> {
        let mut out = GeneratedListing::default();
        self.fill(&mut out);
        Some(out)
    }
}

/// An odd multiplier coprime to `n`, near `n` times the golden ratio's fraction, so
/// `rank * m mod n` scrambles ranks over the whole id range.
fn coprime_multiplier(n: u64) -> u64 {
    fn gcd(mut a: u64, mut b: u64) -> u64 {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    }
    let mut m = ((n as f64) * 0.618_033_988_7) as u64 | 1;
    while gcd(m, n) != 1 {
        m += 2;
    }
    m.max(1)
}

/// Appends `n` as exactly `width` digits (more if it needs them). Pushes ASCII digits one
/// by one: cheaper than formatting or a UTF-8 check for these few bytes.
#[inline]
fn push_digits(out: &mut String, n: u64, width: usize) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut x = n;
    while x > 0 || buf.len() - i < width.min(20) {
        i -= 1;
        buf[i] = b'0' + (x % 10) as u8;
        x /= 10;
        if i == 0 {
            break;
        }
    }
    if i == buf.len() {
        out.push('0');
        return;
    }
    out.reserve(buf.len() - i);
    buf[i..].iter().for_each(|&d| out.push(char::from(d)));
}

#[inline]
fn push_code(out: &mut String, code: u16) {
    push_digits(out, u64::from(code), 4);
}

/// `YYYY-MM-DDT` of a day.
fn day_prefix(day: Day) -> String {
    let (y, m, d) = day.ymd();
    let mut s = String::with_capacity(11);
    push_digits(&mut s, y.max(0) as u64, 4);
    s.push('-');
    push_digits(&mut s, u64::from(m), 2);
    s.push('-');
    push_digits(&mut s, u64::from(d), 2);
    s.push('T');
    s
}

/// `YYYY-MM-DDThh:mm:ss+08:00` for second `sec` of China-time day `day`.
fn push_event_time(out: &mut String, prefix: &str, sec: u32) {
    out.push_str(prefix);
    push_digits(out, u64::from(sec / 3600), 2);
    out.push(':');
    push_digits(out, u64::from(sec / 60 % 60), 2);
    out.push(':');
    push_digits(out, u64::from(sec % 60), 2);
    out.push_str("+08:00");
}

/// A certificate number, canonical or typed the way merchants type it; either way it
/// normalises to `number`. Writes straight into `out` (no temporary strings).
fn push_number(out: &mut String, rng: &mut Rng, number: u64, suffix: [u8; 2], typed: bool) {
    let mut digits = [b'0'; 16];
    let mut x = number;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (x % 10) as u8;
        x /= 10;
    }
    let has_suffix = suffix != [0, 0];
    if !typed {
        digits.iter().for_each(|&d| out.push(char::from(d)));
        if has_suffix && rng.chance(0.5) {
            out.push('(');
            out.push(char::from(suffix[0]));
            out.push(char::from(suffix[1]));
            out.push(')');
        }
        return;
    }
    const PREFIXES: [&str; 9] = [
        "", "3C:", "CCC", "CCC:", "NO.", "No.", "3c ", "ccc: ", "3C：",
    ];
    let prefix = rng.pick(&PREFIXES);
    let full = rng.chance(0.3);
    let spacing = rng.below(4);
    let suffix_case = if has_suffix && rng.chance(0.7) {
        Some(rng.chance(0.3))
    } else {
        None
    };
    let mut put = |c: char| out.push(if full { full_width(c) } else { c });
    if spacing == 3 {
        put(' ');
    }
    prefix.chars().for_each(&mut put);
    for (i, &d) in digits.iter().enumerate() {
        match spacing {
            1 if i > 0 && i % 4 == 0 => put(' '),
            2 if matches!(i, 4 | 6 | 10) => put('-'),
            _ => {}
        }
        put(char::from(d));
    }
    if let Some(lower) = suffix_case {
        let a = char::from(suffix[0]);
        put('(');
        put(if lower { a.to_ascii_lowercase() } else { a });
        put(char::from(suffix[1]));
        put(')');
    }
    if spacing == 3 {
        out.push('\u{3000}');
    }
}

/// Something typed in the number field that is not 16 digits with an optional `(XX)`.
fn push_malformed(out: &mut String, rng: &mut Rng, near: u64) {
    let mut digits = String::with_capacity(16);
    push_digits(&mut digits, near, 16);
    match rng.below(9) {
        0 => out.push_str(&digits[..15]),
        1 => {
            out.push_str(&digits);
            out.push(char::from(b'0' + rng.below(10) as u8));
        }
        2 => {
            let at = 4 + rng.index(12);
            out.push_str(&digits[..at]);
            out.push('O');
            out.push_str(&digits[at + 1..]);
        }
        3 => {
            out.push_str(&digits);
            out.push_str("(B)");
        }
        4 => {
            out.push_str("证书编号");
            out.push_str(&digits);
        }
        5 => {
            out.push_str(&digits);
            out.push('号');
        }
        6 => out.push_str(rng.pick(&["见详情页", "无", "N/A", "123456", "已申请"])),
        7 => {
            out.push_str(&digits);
            out.push('/');
            out.push_str(&digits[..12]);
        }
        _ => {
            out.push_str("CCC3C");
            out.push_str(&digits);
        }
    }
}

/// A covered model, as given or typed differently (case, width, spaces) with the same key.
fn push_model(out: &mut String, rng: &mut Rng, model: &str, typed: bool) {
    if !typed {
        out.push_str(model);
        return;
    }
    match rng.below(3) {
        0 => out.extend(model.chars().map(|c| c.to_ascii_lowercase())),
        1 => out.extend(model.chars().map(full_width)),
        _ => {
            out.push(' ');
            out.extend(model.chars().map(|c| {
                if c == '-' {
                    '-'
                } else {
                    c.to_ascii_uppercase()
                }
            }));
            out.push(' ');
        }
    }
}

/// A model for a listing that refers to no certificate.
fn push_model_like(out: &mut String, rng: &mut Rng) {
    const L: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ";
    out.push(char::from(L[rng.index(L.len())]));
    out.push(char::from(L[rng.index(L.len())]));
    out.push('-');
    push_digits(out, 100 + rng.below(9900), 4);
}

#[cfg(test)]
#[allow(clippy::inconsistent_digit_grouping)] // numbers as year, body, product, serial
mod tests {
    use std::collections::HashSet;

    use cccgate_core::{CertNumber, model_key};

    use super::*;
    use crate::register::RegisterSpec;

    fn register() -> SyntheticRegister {
        RegisterSpec {
            certs: 3_000,
            seed: 5,
            ..RegisterSpec::default()
        }
        .generate()
    }

    #[test]
    fn published_shares_are_the_mix_and_it_sums_to_one() {
        for p in Profile::ALL {
            let s = p.reason_shares();
            assert!((s.iter().sum::<f64>() - 1.0).abs() < 1e-9);
            let blocked: f64 = Reason::ALL
                .iter()
                .filter(|r| r.table_decision() == cccgate_core::Decision::Block)
                .map(|r| s[r.index()])
                .sum();
            assert!((blocked - p.blocked_share()).abs() < 1e-9, "{p}");
            assert!((s[Reason::ModelNotCovered.index()] - p.review_share()).abs() < 1e-12);
        }
        assert!((Profile::Y2021.blocked_share() - 0.0157).abs() < 0.0001);
        assert!((Profile::Y2025.blocked_share() - 0.0492).abs() < 0.0001);
        assert_eq!("2025".parse::<Profile>(), Ok(Profile::Y2025));
        assert!("2024".parse::<Profile>().is_err());
    }

    #[test]
    fn same_seed_same_stream_and_listing_ids_are_unique() {
        let r = register();
        let a: Vec<_> = ListingGenerator::new(&r, Profile::Y2021, 1)
            .take(2_000)
            .collect();
        let b: Vec<_> = ListingGenerator::new(&r, Profile::Y2021, 1)
            .take(2_000)
            .collect();
        assert_eq!(a, b);
        let c: Vec<_> = ListingGenerator::new(&r, Profile::Y2021, 2)
            .take(2_000)
            .collect();
        assert_ne!(a, c);
        let ids: HashSet<_> = a.iter().map(|g| g.event.listing_id.clone()).collect();
        assert_eq!(ids.len(), a.len());
    }

    #[test]
    fn shards_are_deterministic_independent_and_never_share_ids() {
        let r = register();
        let g = ListingGenerator::new(&r, Profile::Y2025, 9);
        let mut ids = HashSet::new();
        let mut firsts = Vec::new();
        for mut s in g.shards(4).into_iter().chain([g.clone()]) {
            let mut out = GeneratedListing::default();
            for i in 0..500 {
                s.fill(&mut out);
                assert!(
                    ids.insert(out.event.listing_id.clone()),
                    "{}",
                    out.event.listing_id
                );
                if i == 0 {
                    firsts.push(out.event.clone());
                }
            }
        }
        let again: Vec<_> = g
            .shards(4)
            .into_iter()
            .map(|mut s| s.next().unwrap().event)
            .collect();
        assert_eq!(&firsts[..4], &again[..]);
        assert_ne!(firsts[0], firsts[1]);
    }

    #[test]
    fn merchants_are_skewed_towards_a_few_big_sellers() {
        let r = register();
        let mut n = std::collections::HashMap::new();
        for g in ListingGenerator::new(&r, Profile::Y2021, 3).take(50_000) {
            assert!(g.event.merchant_id.starts_with('M') && g.event.merchant_id.len() == 9);
            *n.entry(g.event.merchant_id).or_insert(0u32) += 1;
        }
        let mut counts: Vec<u32> = n.values().copied().collect();
        counts.sort_unstable_by(|a, b| b.cmp(a));
        // The top 10 sellers make far more than 10 / 1.7M of the listings.
        let top: u32 = counts.iter().take(10).sum();
        assert!(top > 2_500, "{top}");
        assert!(counts.len() > 10_000, "{}", counts.len());
    }

    #[test]
    fn typed_numbers_normalise_to_the_number() {
        let mut rng = Rng::new(1);
        let n = 2022_11_1101_000119u64;
        let mut typed_forms = HashSet::new();
        for _ in 0..2_000 {
            let mut s = String::new();
            push_number(&mut s, &mut rng, n, *b"B0", true);
            let p = CertNumber::normalize(&s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
            assert_eq!(p.number.get(), n, "{s}");
            typed_forms.insert(s);
        }
        assert!(typed_forms.len() > 50);
    }

    #[test]
    fn malformed_numbers_are_malformed() {
        let mut rng = Rng::new(2);
        for _ in 0..2_000 {
            let mut s = String::new();
            push_malformed(&mut s, &mut rng, 2021_01_0901_000123);
            assert_eq!(
                CertNumber::normalize(&s).err(),
                Some(cccgate_core::CertNumberError::Malformed),
                "{s}"
            );
        }
    }

    #[test]
    fn typed_models_keep_their_key() {
        let mut rng = Rng::new(3);
        for m in ["ABC-1234X", "KFR-35GW/AB123", "abc 12", "BV 2x1.5"] {
            for _ in 0..20 {
                let mut s = String::new();
                push_model(&mut s, &mut rng, m, true);
                assert_eq!(model_key(&s), model_key(m), "{s}");
            }
        }
    }

    #[test]
    fn event_times_are_rfc3339_china_time_in_the_window() {
        let r = register();
        let w = EventWindow::around(r.as_of);
        for g in ListingGenerator::new(&r, Profile::Y2021, 4).take(5_000) {
            let t = &g.event.event_time;
            assert!(t.ends_with("+08:00") && t.len() == 25, "{t}");
            let d = Day::parse_rfc3339_cn(t).unwrap();
            assert!(d >= w.first && d <= w.last, "{t}");
        }
        for g in ListingGenerator::new(&r, Profile::Y2021, 4)
            .with_event_time(None)
            .take(1_000)
        {
            assert_eq!(g.event.event_time, "");
        }
    }

    #[test]
    fn a_tiny_register_still_gives_consistent_cases() {
        let r = RegisterSpec {
            certs: 5,
            seed: 1,
            ..RegisterSpec::default()
        }
        .generate();
        let n = ListingGenerator::new(&r, Profile::Y2025, 1)
            .take(1_000)
            .count();
        assert_eq!(n, 1_000);
    }

    #[test]
    fn mode_index_agrees_with_the_catalogue_on_every_code_and_day() {
        let r = register();
        let t = Tables::new(&r, 1);
        let c = &r.catalogue;
        let days = [
            (2002, 4, 30),
            (2002, 5, 1),
            (2023, 6, 30),
            (2023, 7, 1),
            (2024, 7, 31),
            (2024, 8, 1),
            (2026, 11, 27),
        ];
        for (y, m, d) in days {
            let day = Day::from_ymd(y, m, d).unwrap();
            for code in 0..10_000u16 {
                let want = ProductCode::new(code)
                    .and_then(|p| c.in_force(p, day))
                    .map(|e| e.mode);
                assert_eq!(t.mode_on(code, day), want, "{code:04} on {day}");
            }
        }
    }

    #[test]
    fn digits_are_zero_padded() {
        let mut s = String::new();
        push_digits(&mut s, 42, 4);
        push_digits(&mut s, 12345, 2);
        push_digits(&mut s, 0, 1);
        assert_eq!(s, "0042123450");
        let mut u = String::new();
        push_digits(&mut u, u64::MAX, 4);
        assert_eq!(u, u64::MAX.to_string());
        let mut t = String::new();
        push_event_time(
            &mut t,
            &day_prefix(Day::from_ymd(2026, 11, 27).unwrap()),
            3661,
        );
        assert_eq!(t, "2026-11-27T01:01:01+08:00");
    }
}
