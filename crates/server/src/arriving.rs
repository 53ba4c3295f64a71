//! Listings counted while a CheckBatch message arrives, so that a message of more than
//! `--max-batch` listings is refused before the rest of its bytes are received, decrypted and
//! buffered (a 16 MiB message of empty listings is refused after its first ~20 KB).
//!
//! The counter follows the top level of a `CheckBatchRequest` (`listings = 1`) across the
//! body's frames: field keys, lengths and values, skipping each value's bytes. It never
//! allocates and never refuses a message that [`crate::wire::decode`] would accept; on
//! anything it does not understand it stops counting and leaves the message to the decoder.

/// The listings field of `CheckBatchRequest`.
const LISTINGS: u64 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a field key (a varint).
    Key,
    /// Reading a length (a varint) of a length-delimited field.
    Len,
    /// Reading a varint value.
    Varint,
    /// Skipping this many bytes of a value.
    Skip(u64),
    /// Not counting (malformed or unknown wire type): the decoder will say why.
    Off,
}

/// Counts `CheckBatchRequest.listings` in one message as its bytes arrive.
#[derive(Debug, Clone)]
pub(crate) struct ListingCounter {
    state: State,
    acc: u64,
    shift: u32,
    count: usize,
}

impl Default for ListingCounter {
    fn default() -> Self {
        ListingCounter {
            state: State::Key,
            acc: 0,
            shift: 0,
            count: 0,
        }
    }
}

impl ListingCounter {
    /// Starts a new message.
    pub(crate) fn reset(&mut self) {
        *self = ListingCounter::default();
    }

    /// Listings seen so far in this message.
    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// Feeds the next bytes of the message (never past its end).
    pub(crate) fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match self.state {
                State::Off => return,
                State::Skip(n) => {
                    let k = usize::try_from(n).unwrap_or(usize::MAX).min(data.len());
                    data = &data[k..];
                    let left = n - k as u64;
                    self.state = if left == 0 {
                        State::Key
                    } else {
                        State::Skip(left)
                    };
                }
                State::Key | State::Len | State::Varint => {
                    let b = data[0];
                    data = &data[1..];
                    if self.shift >= 64 {
                        self.state = State::Off;
                        return;
                    }
                    self.acc |= u64::from(b & 0x7f) << self.shift;
                    self.shift += 7;
                    if b & 0x80 != 0 {
                        continue;
                    }
                    let v = self.acc;
                    (self.acc, self.shift) = (0, 0);
                    self.state = match self.state {
                        State::Key => match v & 7 {
                            0 => State::Varint,
                            1 => State::Skip(8),
                            2 => {
                                if v >> 3 == LISTINGS {
                                    self.count += 1;
                                }
                                State::Len
                            }
                            5 => State::Skip(4),
                            _ => State::Off,
                        },
                        State::Len if v == 0 => State::Key,
                        State::Len => State::Skip(v),
                        _ => State::Key,
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cccgate_proto::v1::{CheckBatchRequest, Listing};
    use prost::Message;

    fn counted_in_pieces(bytes: &[u8], piece: usize) -> usize {
        let mut c = ListingCounter::default();
        for chunk in bytes.chunks(piece) {
            c.feed(chunk);
        }
        c.count()
    }

    #[test]
    fn counts_listings_across_any_split_of_the_bytes() {
        let msg = CheckBatchRequest {
            listings: (0..300)
                .map(|i| Listing {
                    listing_id: format!("L{i}"),
                    model: "m".repeat(i % 200),
                    ..Default::default()
                })
                .chain(std::iter::once(Listing::default()))
                .collect(),
            min_snapshot_sequence: u64::MAX,
        };
        let bytes = msg.encode_to_vec();
        for piece in [1, 2, 3, 7, 64, 1000, bytes.len()] {
            assert_eq!(counted_in_pieces(&bytes, piece), 301, "pieces of {piece}");
        }
        // Empty listings: two bytes each.
        assert_eq!(counted_in_pieces(&[0x0a, 0, 0x0a, 0, 0x0a, 0], 1), 3);
    }

    #[test]
    fn stops_counting_on_what_it_does_not_understand_and_resets() {
        let mut c = ListingCounter::default();
        // Field 1, wire type 3 (a group): not counted further.
        c.feed(&[0x0b, 0x0a, 0x00, 0x0a, 0x00]);
        assert_eq!(c.count(), 0);
        c.reset();
        c.feed(&[0x0a, 0x00]);
        assert_eq!(c.count(), 1);
        // A varint of more than ten bytes.
        c.reset();
        c.feed(&[0xff; 11]);
        c.feed(&[0x0a, 0x00]);
        assert_eq!(c.count(), 0);
        // Other fields are skipped: fixed64, fixed32, varints and lengths.
        c.reset();
        c.feed(&[
            0x11, 1, 2, 3, 4, 5, 6, 7, 8, 0x15, 1, 2, 3, 4, 0x10, 0x96, 0x01,
        ]);
        c.feed(&[0x1a, 0x02, 0x0a, 0x00, 0x0a, 0x00]);
        assert_eq!(c.count(), 1);
    }
}
