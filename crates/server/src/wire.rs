//! Bounded decoding of the public plane's request messages (`CheckRequest`,
//! `CheckBatchRequest`) straight from their protobuf wire bytes.
//!
//! # Why not prost
//!
//! prost materialises every listing of a message before anything can look at it: a 16 MiB
//! message of empty listings (2 bytes each on the wire) became 8 million `Listing` structs,
//! 36 times the bytes received. Here a first pass over the bytes counts the listings, allocating
//! nothing; a message with more than `max_listings` is refused before a single listing exists.
//! The second pass records where each field is (48 bytes of spans a listing, the text never
//! copied: [`Decoded`] keeps the received bytes and [`Decoded::view`] borrows from them), each
//! checked against its limit and for UTF-8: a field over its limit is left out, and its listing
//! is answered with an error naming the field (`listing_id` is kept cut to its limit, so the
//! error can still say which listing it was).

use bytes::Bytes;
use cccgate_core::{CERTIFICATE_NUMBER_MAX_BYTES, ID_MAX_BYTES, ListingError, MODEL_MAX_BYTES};
use cccgate_proto::InvalidListing;
use cccgate_proto::v1::Listing as WireListing;

/// Longest `product_code` and `event_time` copied from the wire. Valid ones are 4 and at most
/// 35 bytes; a bad one is quoted in its error cut to 64 bytes anyway.
pub(crate) const SHORT_FIELD_MAX_BYTES: usize = 64;

/// The most bytes one listing at the largest field sizes takes on the wire: six
/// length-delimited fields at their limits, plus the listing's own tag and length.
#[cfg(test)]
pub(crate) const MAX_LISTING_WIRE_BYTES: usize = 3 // listing tag + 2-byte length
    + 3 * (1 + 2 + ID_MAX_BYTES) // listing_id, merchant_id, certificate_number (128 bytes each)
    + (1 + 2 + MODEL_MAX_BYTES)
    + 2 * (1 + 1 + SHORT_FIELD_MAX_BYTES);

const _: () = assert!(CERTIFICATE_NUMBER_MAX_BYTES == ID_MAX_BYTES);

/// Where one listing's six fields are in the message's bytes (48 bytes of spans; no text copied).
#[derive(Debug, Default, Clone)]
pub(crate) struct Item {
    /// `(start, end)` of `listing_id`, `merchant_id`, `product_code`, `certificate_number`,
    /// `model`, `event_time` (field numbers 1..=6). Empty when absent or over its limit
    /// (`listing_id` is kept, cut to its limit, so an error can still name the listing).
    spans: [(u32, u32); 6],
    /// The first field found over its limit.
    pub over: Option<ListingError>,
}

/// One decoded listing's text, borrowed from the received message. The fields are named as
/// in the generated `Listing`, and [`View::validate`] is its `validate`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct View<'a> {
    pub listing_id: &'a str,
    pub merchant_id: &'a str,
    pub product_code: &'a str,
    pub certificate_number: &'a str,
    pub model: &'a str,
    pub event_time: &'a str,
}

impl<'a> View<'a> {
    /// Validates the listing, borrowing its text (as `cccgate_proto::v1::Listing::validate`).
    pub fn validate(
        &self,
        received_day: cccgate_core::Day,
    ) -> Result<cccgate_core::Listing<'a>, InvalidListing> {
        cccgate_core::Listing::parse(
            self.listing_id,
            self.merchant_id,
            self.product_code,
            self.certificate_number,
            self.model,
            self.event_time,
            received_day,
        )
        .map_err(|error| InvalidListing {
            listing_id: cut(self.listing_id, ID_MAX_BYTES).to_owned(),
            error,
        })
    }

    /// An owned copy, as the generated type (a shadow evaluation's sample).
    pub fn to_wire(self) -> WireListing {
        WireListing {
            listing_id: self.listing_id.into(),
            merchant_id: self.merchant_id.into(),
            product_code: self.product_code.into(),
            certificate_number: self.certificate_number.into(),
            model: self.model.into(),
            event_time: self.event_time.into(),
        }
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub(crate) fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A decoded `CheckRequest` or `CheckBatchRequest`: the received bytes and where each
/// listing's fields are in them.
#[derive(Debug, Default)]
pub(crate) struct Decoded {
    /// The message as received (shared with the receive buffer, not copied).
    bytes: Bytes,
    /// `CheckRequest.listing` (always `None` for a batch). Private, as `listings`: every
    /// item in a `Decoded` was made from its own `bytes` ([`Decoded::view`] relies on it).
    listing: Option<Item>,
    /// `listings`.
    listings: Vec<Item>,
    /// `min_snapshot_sequence`.
    pub min_snapshot_sequence: u64,
}

impl Decoded {
    /// Listings in the message (the single one included).
    pub fn len(&self) -> usize {
        usize::from(self.listing.is_some()) + self.listings.len()
    }

    /// `CheckRequest.listing` (always `None` for a batch).
    pub fn listing(&self) -> Option<&Item> {
        self.listing.as_ref()
    }

    /// `listings`.
    pub fn listings(&self) -> &[Item] {
        &self.listings
    }

    /// Whether `item` is one of this message's own items (not a clone, not another's).
    #[inline]
    fn owns(&self, item: &Item) -> bool {
        let item: *const Item = item;
        self.listings.as_ptr_range().contains(&item)
            || self.listing.as_ref().is_some_and(|l| std::ptr::eq(l, item))
    }

    /// The text of `item`, one of this message's listings.
    #[inline]
    pub fn view(&self, item: &Item) -> View<'_> {
        // Every span of an item this message holds was checked to be in bounds and valid
        // UTF-8 when it was decoded (`parse_listing`) or gathered from strings (`From<
        // OwnedRequest>`), and neither the bytes nor the items change after: its text is not
        // checked a second time. Another message's item (a bug) is checked, and a span of it
        // out of bounds or not UTF-8 here reads as empty rather than panicking.
        let ours = self.owns(item);
        let field = |i: usize| {
            let (s, e) = item.spans[i];
            let Some(b) = self.bytes.get(s as usize..e as usize) else {
                return "";
            };
            if ours {
                debug_assert!(std::str::from_utf8(b).is_ok());
                // SAFETY: `b` is a span of one of this message's own items, checked to be
                // valid UTF-8 when the item was made from these same (immutable) bytes: see
                // `parse_listing` and `From<OwnedRequest>`, the only places spans are set.
                #[allow(unsafe_code)]
                unsafe {
                    std::str::from_utf8_unchecked(b)
                }
            } else {
                std::str::from_utf8(b).unwrap_or_default()
            }
        };
        View {
            listing_id: field(0),
            merchant_id: field(1),
            product_code: field(2),
            certificate_number: field(3),
            model: field(4),
            event_time: field(5),
        }
    }
}

/// A listing whose text is owned: a request read from another encoding than protobuf (the
/// HTTP/JSON endpoints) before it becomes a [`Decoded`].
#[derive(Debug, Default)]
pub(crate) struct OwnedItem {
    /// The listing; a field over its limit is left empty (`listing_id` is cut instead).
    pub wire: WireListing,
    /// The first field found over its limit.
    pub over: Option<ListingError>,
}

/// A request whose listings' text is owned (see [`OwnedItem`]).
#[derive(Debug, Default)]
pub(crate) struct OwnedRequest {
    /// `CheckRequest.listing`.
    pub listing: Option<OwnedItem>,
    /// `listings`.
    pub listings: Vec<OwnedItem>,
    /// `min_snapshot_sequence`.
    pub min_snapshot_sequence: u64,
}

impl From<OwnedRequest> for Decoded {
    /// Gathers every listing's text into one buffer, read in place from then on as a decoded
    /// protobuf message is. Limits were applied while the owned request was read.
    fn from(r: OwnedRequest) -> Decoded {
        let text = |i: &OwnedItem| {
            let w = &i.wire;
            w.listing_id.len()
                + w.merchant_id.len()
                + w.product_code.len()
                + w.certificate_number.len()
                + w.model.len()
                + w.event_time.len()
        };
        let total = r.listing.iter().chain(&r.listings).map(text).sum();
        let mut buf = Vec::with_capacity(total);
        let mut item = |i: OwnedItem| {
            let w = &i.wire;
            let mut spans = [(0u32, 0u32); 6];
            for (span, s) in spans.iter_mut().zip([
                &w.listing_id,
                &w.merchant_id,
                &w.product_code,
                &w.certificate_number,
                &w.model,
                &w.event_time,
            ]) {
                let start = buf.len();
                buf.extend_from_slice(s.as_bytes());
                // A request is at most --max-message-bytes (well under 4 GiB) of text.
                *span = (
                    u32::try_from(start).unwrap_or(u32::MAX),
                    u32::try_from(buf.len()).unwrap_or(u32::MAX),
                );
            }
            Item {
                spans,
                over: i.over,
            }
        };
        let listing = r.listing.map(&mut item);
        let listings = r.listings.into_iter().map(&mut item).collect();
        Decoded {
            bytes: Bytes::from(buf),
            listing,
            listings,
            min_snapshot_sequence: r.min_snapshot_sequence,
        }
    }
}

/// Which message the bytes hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    /// `CheckRequest`: listing = 1, listings = 2, min_snapshot_sequence = 3.
    Request,
    /// `CheckBatchRequest`: listings = 1, min_snapshot_sequence = 2.
    Batch,
}

/// Why a message is refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WireError {
    /// More listings than allowed; counted without decoding any.
    #[error("{len} listings in one message, over the limit of {max}")]
    TooMany {
        /// Listings counted.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not a valid protobuf message of the expected shape.
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// For the fuzz targets (`fuzz/`): decodes `bytes` as both request shapes with a limit of
/// `max_listings`; returns the listings decoded for each, or `None` where refused. Checks the
/// one invariant a caller relies on: never more listings than the limit.
#[doc(hidden)]
pub fn fuzz_decode(bytes: &[u8], max_listings: usize) -> [Option<usize>; 2] {
    [Shape::Request, Shape::Batch].map(|shape| {
        decode(Bytes::copy_from_slice(bytes), shape, max_listings)
            .ok()
            .map(|d| {
                assert!(
                    d.len() <= max_listings.max(1),
                    "{} listings over {max_listings}",
                    d.len()
                );
                d.len()
            })
    })
}

/// Decodes `bytes` as `shape`, refusing more than `max_listings` listings before any exists.
/// Nothing is copied: the result keeps `bytes` and where each field is in it.
pub(crate) fn decode(
    bytes: Bytes,
    shape: Shape,
    max_listings: usize,
) -> Result<Decoded, WireError> {
    count(bytes, shape, max_listings)?.parse()
}

/// A message whose listings are counted (within the limit) but not yet parsed: [`count`]
/// is the first pass of [`decode`], [`Counted::parse`] and [`Counted::parse_in_turns`] the
/// second. A largest batch (10,000 listings, 7.9 MB) takes 1-2 ms to parse; in turns, the
/// worker thread goes to other tasks between two turns instead of being held for all of it.
#[derive(Debug)]
pub(crate) struct Counted {
    bytes: Bytes,
    shape: Shape,
    count: usize,
    has_single: bool,
}

/// Counts the listings of `bytes` as `shape` (the first pass of [`decode`], allocating
/// nothing), refusing more than `max_listings` before any exists.
pub(crate) fn count(bytes: Bytes, shape: Shape, max_listings: usize) -> Result<Counted, WireError> {
    if u32::try_from(bytes.len()).is_err() {
        return Err(WireError::Malformed("message over 4 GiB".into()));
    }
    let (single, repeated, _) = shape.fields();
    let mut count = 0usize;
    let mut has_single = false;
    let mut r = Reader::new(&bytes);
    while !r.done() {
        let (field, wt) = r.key()?;
        if field == repeated && wt == LEN {
            count += 1;
        } else if Some(field) == single && wt == LEN {
            has_single = true;
        }
        r.skip(wt)?;
    }
    let total = count + usize::from(has_single);
    if total > max_listings {
        return Err(WireError::TooMany {
            len: total,
            max: max_listings,
        });
    }
    Ok(Counted {
        bytes,
        shape,
        count,
        has_single,
    })
}

impl Shape {
    /// The field numbers of the single listing, the repeated listings and
    /// `min_snapshot_sequence`.
    fn fields(self) -> (Option<u64>, u64, u64) {
        match self {
            Shape::Request => (Some(1), 2, 3),
            Shape::Batch => (None, 1, 2),
        }
    }
}

impl Counted {
    /// Listings in the message (the single one included).
    pub fn len(&self) -> usize {
        self.count + usize::from(self.has_single)
    }

    /// Parses every listing at once: where each field is, each checked against its limit.
    pub fn parse(self) -> Result<Decoded, WireError> {
        let mut p = Parse::new(self);
        while !p.step(usize::MAX)? {}
        Ok(p.out)
    }

    /// Parses as [`Counted::parse`] does, `turn` listings at a time, yielding the worker
    /// thread between two turns (other tasks run). A message of at most `turn` listings is
    /// parsed without yielding.
    pub async fn parse_in_turns(self, turn: usize) -> Result<Decoded, WireError> {
        let mut p = Parse::new(self);
        while !p.step(turn.max(1))? {
            tokio::task::yield_now().await;
        }
        Ok(p.out)
    }
}

/// The second pass of [`decode`], resumable: where it is in the bytes, and what it has so far.
struct Parse {
    at: usize,
    shape: Shape,
    out: Decoded,
}

impl Parse {
    fn new(c: Counted) -> Parse {
        Parse {
            at: 0,
            shape: c.shape,
            out: Decoded {
                listings: Vec::with_capacity(c.count),
                bytes: c.bytes,
                listing: None,
                min_snapshot_sequence: 0,
            },
        }
    }

    /// Parses up to `n` more listings; `true` once the whole message is parsed.
    fn step(&mut self, n: usize) -> Result<bool, WireError> {
        let (single, repeated, min_seq) = self.shape.fields();
        let out = &mut self.out;
        let mut r = Reader {
            b: &out.bytes,
            at: self.at,
        };
        let mut parsed = 0;
        while !r.done() {
            let before = r.at;
            let (field, wt) = r.key()?;
            let listing = wt == LEN && (field == repeated || Some(field) == single);
            if listing && parsed == n {
                // This turn is done; the next one starts at this listing's key.
                self.at = before;
                return Ok(false);
            }
            if field == repeated && wt == LEN {
                let at = out.listings.len();
                out.listings
                    .push(parse_listing(&out.bytes, r.range()?, at)?);
                parsed += 1;
            } else if Some(field) == single && wt == LEN {
                out.listing = Some(parse_listing(&out.bytes, r.range()?, 0)?);
                parsed += 1;
            } else if field == min_seq && wt == VARINT {
                out.min_snapshot_sequence = r.varint()?;
            } else {
                r.skip(wt)?;
            }
        }
        self.at = r.at;
        Ok(true)
    }
}

/// The listing at `bytes[start..end]`; spans are kept relative to the whole message.
fn parse_listing(
    bytes: &[u8],
    (start, end): (usize, usize),
    index: usize,
) -> Result<Item, WireError> {
    let mut item = Item::default();
    let mut r = Reader {
        b: &bytes[..end],
        at: start,
    };
    while !r.done() {
        let (field, wt) = r.key()?;
        let (name, max): (&'static str, usize) = match field {
            1 => ("listing_id", ID_MAX_BYTES),
            2 => ("merchant_id", ID_MAX_BYTES),
            3 => ("product_code", SHORT_FIELD_MAX_BYTES),
            4 => ("certificate_number", CERTIFICATE_NUMBER_MAX_BYTES),
            5 => ("model", MODEL_MAX_BYTES),
            6 => ("event_time", SHORT_FIELD_MAX_BYTES),
            _ => {
                r.skip(wt)?;
                continue;
            }
        };
        if wt != LEN {
            return Err(WireError::Malformed(format!(
                "listing {index}: {name} is not a string"
            )));
        }
        let (s, e) = r.range()?;
        let len = e - s;
        let over = len > max;
        if over && item.over.is_none() {
            item.over = Some(ListingError::TooLong {
                field: name,
                len,
                max,
            });
        }
        // The id is kept, cut to its limit, so an error can name the listing; any other
        // field over its limit is left empty (the listing is answered with the error).
        let slot = field as usize - 1;
        if over && field != 1 {
            item.spans[slot] = (0, 0);
            continue;
        }
        let e = if over { s + max } else { e };
        // Nearly every field is ASCII: a word at a time, inline, before the full check.
        let text = &bytes[s..e];
        let e = match if text.is_ascii() {
            Ok("")
        } else {
            std::str::from_utf8(text)
        } {
            Ok(_) => e,
            Err(err) if over => s + err.valid_up_to(),
            Err(_) => {
                return Err(WireError::Malformed(format!(
                    "listing {index}: {name} is not valid UTF-8"
                )));
            }
        };
        // In bounds of a message under 4 GiB (checked by `decode`).
        item.spans[slot] = (s as u32, e as u32);
    }
    Ok(item)
}

const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;
const I32: u8 = 5;

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(b: &'a [u8]) -> Self {
        Reader { b, at: 0 }
    }

    #[inline]
    fn done(&self) -> bool {
        self.at >= self.b.len()
    }

    /// A varint; the one-byte case (every key and short length here) inline.
    #[inline]
    fn varint(&mut self) -> Result<u64, WireError> {
        match self.b.get(self.at) {
            Some(&byte) if byte < 0x80 => {
                self.at += 1;
                Ok(u64::from(byte))
            }
            _ => self.varint_long(),
        }
    }

    #[inline(never)]
    fn varint_long(&mut self) -> Result<u64, WireError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&byte) = self.b.get(self.at) else {
                return Err(WireError::Malformed("truncated varint".into()));
            };
            self.at += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(v);
            }
        }
        Err(WireError::Malformed("varint over 10 bytes".into()))
    }

    #[inline]
    fn key(&mut self) -> Result<(u64, u8), WireError> {
        let k = self.varint()?;
        let (field, wt) = (k >> 3, (k & 7) as u8);
        if field == 0 {
            return Err(WireError::Malformed("field number 0".into()));
        }
        Ok((field, wt))
    }

    #[inline]
    fn take(&mut self, n: u64) -> Result<&'a [u8], WireError> {
        let end = usize::try_from(n)
            .ok()
            .and_then(|n| self.at.checked_add(n))
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| WireError::Malformed("a length runs past the end".into()))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn bytes(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.varint()?;
        self.take(n)
    }

    /// A length-delimited field's `(start, end)` in the bytes.
    #[inline]
    fn range(&mut self) -> Result<(usize, usize), WireError> {
        let n = self.varint()?;
        let start = self.at;
        self.take(n)?;
        Ok((start, self.at))
    }

    fn skip(&mut self, wt: u8) -> Result<(), WireError> {
        match wt {
            VARINT => self.varint().map(drop),
            I64 => self.take(8).map(drop),
            LEN => self.bytes().map(drop),
            I32 => self.take(4).map(drop),
            other => Err(WireError::Malformed(format!("wire type {other}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cccgate_proto::v1::{CheckBatchRequest, CheckRequest};
    use prost::Message;

    fn full(id: usize) -> WireListing {
        WireListing {
            listing_id: format!("{id:0>128}"),
            merchant_id: "m".repeat(ID_MAX_BYTES),
            product_code: "p".repeat(SHORT_FIELD_MAX_BYTES),
            certificate_number: "c".repeat(CERTIFICATE_NUMBER_MAX_BYTES),
            model: "模".repeat(MODEL_MAX_BYTES / 3),
            event_time: "e".repeat(SHORT_FIELD_MAX_BYTES),
        }
    }

    #[test]
    fn decodes_what_prost_encodes() {
        let l = WireListing {
            listing_id: "L1".into(),
            merchant_id: "M".into(),
            product_code: "0901".into(),
            certificate_number: "3C:2003-0101-0100-0001".into(),
            model: "X-1".into(),
            event_time: "2026-11-27T10:00:00+08:00".into(),
        };
        let req = CheckRequest {
            listing: Some(l.clone()),
            listings: vec![l.clone(), WireListing::default()],
            min_snapshot_sequence: 7,
        };
        let d = decode(req.encode_to_vec().into(), Shape::Request, 10).unwrap();
        assert_eq!(d.view(d.listing.as_ref().unwrap()).to_wire(), l);
        assert_eq!(d.listings.len(), 2);
        assert_eq!(d.view(&d.listings[0]).to_wire(), l);
        assert_eq!(d.view(&d.listings[1]).to_wire(), WireListing::default());
        assert_eq!(d.min_snapshot_sequence, 7);
        let batch = CheckBatchRequest {
            listings: vec![l.clone(); 3],
            min_snapshot_sequence: 9,
        };
        let d = decode(batch.encode_to_vec().into(), Shape::Batch, 3).unwrap();
        assert_eq!((d.listings.len(), d.min_snapshot_sequence), (3, 9));
    }

    /// Polls `f` to completion with a waker that does nothing; how many polls it took.
    fn polls<F: Future>(f: F) -> (F::Output, usize) {
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        for n in 1..10_000 {
            if let std::task::Poll::Ready(out) = f.as_mut().poll(&mut cx) {
                return (out, n);
            }
        }
        panic!("not done in 10,000 polls");
    }

    #[test]
    fn parsed_in_turns_it_yields_between_turns_and_is_the_same_message() {
        let batch = CheckBatchRequest {
            listings: (0..1_001).map(full).collect(),
            min_snapshot_sequence: 5,
        };
        let bytes = Bytes::from(batch.encode_to_vec());
        let whole = decode(bytes.clone(), Shape::Batch, 10_000).unwrap();
        let counted = count(bytes.clone(), Shape::Batch, 10_000).unwrap();
        assert_eq!(counted.len(), 1_001);
        // 1,001 listings in turns of 250: five turns, four yields between them.
        let (turns, n) = polls(counted.parse_in_turns(250));
        let turns = turns.unwrap();
        assert_eq!(n, 5, "one poll per turn");
        assert_eq!(turns.min_snapshot_sequence, 5);
        assert_eq!(turns.listings.len(), whole.listings.len());
        for (a, b) in turns.listings.iter().zip(&whole.listings) {
            assert_eq!(turns.view(a), whole.view(b));
        }
        // A message of at most one turn is parsed in one poll.
        let (_, n) = polls(
            count(bytes.clone(), Shape::Batch, 10_000)
                .unwrap()
                .parse_in_turns(1_001),
        );
        assert_eq!(n, 1);
        // A bad listing past the first turn is found in its turn, with its index.
        let mut bad = batch.encode_to_vec();
        let at = bad.len() - 10;
        bad[at] = 0xff;
        let counted = count(Bytes::from(bad), Shape::Batch, 10_000).unwrap();
        let (err, _) = polls(counted.parse_in_turns(250));
        assert!(
            matches!(&err, Err(WireError::Malformed(m)) if m.starts_with("listing 1000:")),
            "{err:?}"
        );
    }

    #[test]
    fn only_a_message_s_own_items_are_read_unchecked() {
        let l = |id: &str| WireListing {
            listing_id: id.into(),
            merchant_id: "商户".into(),
            model: "型号 X-1".into(),
            ..WireListing::default()
        };
        let batch = |ls: Vec<WireListing>| CheckBatchRequest {
            listings: ls,
            min_snapshot_sequence: 0,
        };
        let a = decode(
            batch(vec![l("长的编号-0001"), l("L2")])
                .encode_to_vec()
                .into(),
            Shape::Batch,
            10,
        )
        .unwrap();
        let b = decode(batch(vec![l("")]).encode_to_vec().into(), Shape::Batch, 10).unwrap();
        let own = &a.listings()[0];
        assert!(a.owns(own) && a.owns(&a.listings()[1]) && !b.owns(own));
        // A clone is not one of the message's items: read checked, the same text.
        let clone = own.clone();
        assert!(!a.owns(&clone));
        assert_eq!(a.view(&clone), a.view(own));
        assert_eq!(a.view(own).to_wire(), l("长的编号-0001"));
        // Another message's item: its spans run past these bytes; empty, not a panic.
        let other = b.view(&a.listings()[1]);
        assert_eq!(other.model, "");
    }

    #[test]
    fn too_many_listings_are_counted_not_decoded() {
        let batch = CheckBatchRequest {
            listings: vec![WireListing::default(); 11],
            min_snapshot_sequence: 0,
        };
        let err = decode(batch.encode_to_vec().into(), Shape::Batch, 10).unwrap_err();
        assert_eq!(err, WireError::TooMany { len: 11, max: 10 });
    }

    #[test]
    fn a_field_over_its_limit_is_not_copied_and_names_the_field() {
        let mut l = full(1);
        l.model = "x".repeat(10_000);
        l.listing_id = "i".repeat(300);
        let batch = CheckBatchRequest {
            listings: vec![l],
            min_snapshot_sequence: 0,
        };
        let d = decode(batch.encode_to_vec().into(), Shape::Batch, 10).unwrap();
        let item = &d.listings[0];
        assert_eq!(
            item.over,
            Some(ListingError::TooLong {
                field: "listing_id",
                len: 300,
                max: 128
            })
        );
        let view = d.view(item);
        assert_eq!(view.listing_id.len(), 128);
        assert!(view.model.is_empty());
    }

    #[test]
    fn malformed_bytes_are_refused_not_panicked_on() {
        for bytes in [
            &[0x0a, 0x05, 1][..],
            &[0x0a][..],
            &[0xff; 11][..],
            &[0x00][..],
        ] {
            assert!(matches!(
                decode(Bytes::copy_from_slice(bytes), Shape::Batch, 10),
                Err(WireError::Malformed(_))
            ));
        }
        let bad_utf8 = [0x0a, 0x03, 0x0a, 0x01, 0xff];
        let err = decode(Bytes::copy_from_slice(&bad_utf8), Shape::Batch, 10).unwrap_err();
        assert!(err.to_string().contains("listing_id"), "{err}");
    }

    #[test]
    fn the_largest_valid_batch_fits_the_default_message_size() {
        let max_batch = crate::Limits::default().max_batch;
        let batch = CheckBatchRequest {
            listings: (0..max_batch).map(full).collect(),
            min_snapshot_sequence: u64::MAX,
        };
        let len = batch.encoded_len();
        assert!(len <= max_batch * MAX_LISTING_WIRE_BYTES + 11, "{len}");
        assert!(
            len <= crate::Limits::default().max_message_bytes,
            "{len} bytes do not fit the default message size"
        );
        let d = decode(batch.encode_to_vec().into(), Shape::Batch, max_batch).unwrap();
        assert!(d.listings.iter().all(|i| i.over.is_none()));
    }
}
