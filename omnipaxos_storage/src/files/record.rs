//! Checksummed records: the one framing of every log this project writes (the journal of
//! `JournalStorage`, the write-ahead log of `PersistentStorage`, the kv_store's state segments).
//!
//! A record is a 24-byte header and a payload. The header holds the payload's length, flags,
//! a sequence number the log chooses (the record's place, so that a record out of place is
//! seen), a CRC-32 of those three, and a CRC-32 of the payload.
//!
//! **Torn or corrupt.** Reading a log stops at the first record that is not whole. That record
//! is the torn tail of a write cut short by a crash only if it can be: nothing valid of the
//! same log follows it (a later record that was synced proves everything before it was
//! synced), it lies where the log says unsynced data may be, and it looks torn (the file ends
//! inside it, or its part in one of the 512-byte sectors it spans holds only zeros, never
//! written, or it was never waited for: the rule etcd's write-ahead log uses).
//! Anything else is corruption: [`read_log`] says where, and the store refuses to open.

use std::ops::Range;

/// Bytes of a record's header.
pub const HEADER: usize = 24;
/// Flag: the record's write waited for the device (the caller was told it is durable).
pub const WAITED: u32 = 1;
/// The unit a device writes whole, or not at all.
const SECTOR: usize = 512;

/// The header of a record holding `payload`.
pub fn header(seq: u64, flags: u32, payload: &[u8]) -> [u8; HEADER] {
    header_for(seq, flags, payload.len() as u32, crc32fast::hash(payload))
}

/// The header of a record whose payload (of `len` bytes, CRC `payload_crc`) was written
/// separately, e.g. streamed.
pub fn header_for(seq: u64, flags: u32, len: u32, payload_crc: u32) -> [u8; HEADER] {
    let mut header = [0u8; HEADER];
    header[0..4].copy_from_slice(&len.to_le_bytes());
    header[4..8].copy_from_slice(&flags.to_le_bytes());
    header[8..16].copy_from_slice(&seq.to_le_bytes());
    let header_crc = crc32fast::hash(&header[..16]);
    header[16..20].copy_from_slice(&header_crc.to_le_bytes());
    header[20..24].copy_from_slice(&payload_crc.to_le_bytes());
    header
}

/// A whole record: header and payload.
pub fn encode(seq: u64, flags: u32, payload: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(HEADER + payload.len());
    record.extend_from_slice(&header(seq, flags, payload));
    record.extend_from_slice(payload);
    record
}

/// A record read back whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// Where it starts.
    pub offset: u64,
    /// Its sequence number.
    pub seq: u64,
    /// Its flags.
    pub flags: u32,
    /// Its payload.
    pub payload: &'a [u8],
}

impl Record<'_> {
    /// Where the next record starts.
    pub fn end(&self) -> u64 {
        self.offset + (HEADER + self.payload.len()) as u64
    }

    /// Whether its write waited for the device.
    pub fn waited(&self) -> bool {
        self.flags & WAITED != 0
    }
}

/// What is at an offset.
enum Found<'a> {
    Whole(Record<'a>),
    /// The bytes end inside the header or the payload.
    Cut,
    /// A header of zeros: never written (preallocated or zero-filled space).
    Zeros,
    /// The header fails its check.
    BadHeader,
    /// The header is fine, the payload is not.
    BadPayload {
        flags: u32,
        len: usize,
    },
}

/// Whether `bytes` are all zero (compared a block at a time: a preallocated log is mostly
/// zeros, and this is fast even unoptimised).
fn all_zeros(bytes: &[u8]) -> bool {
    const ZEROS: [u8; 4096] = [0; 4096];
    bytes
        .chunks(ZEROS.len())
        .all(|block| block == &ZEROS[..block.len()])
}

fn word(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn found(bytes: &[u8], at: usize) -> Found<'_> {
    let Some(head) = bytes.get(at..).and_then(|rest| rest.get(..HEADER)) else {
        return Found::Cut;
    };
    if all_zeros(head) {
        return Found::Zeros;
    }
    if crc32fast::hash(&head[..16]) != word(head, 16) {
        return Found::BadHeader;
    }
    let len = word(head, 0) as usize;
    let flags = word(head, 4);
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&head[8..16]);
    let Some(payload) = bytes.get(at + HEADER..).and_then(|rest| rest.get(..len)) else {
        return Found::Cut;
    };
    if crc32fast::hash(payload) != word(head, 20) {
        return Found::BadPayload { flags, len };
    }
    Found::Whole(Record {
        offset: at as u64,
        seq: u64::from_le_bytes(seq),
        flags,
        payload,
    })
}

/// Whether the part of `range` in one of the 512-byte sectors it touches (counted from the
/// start of `bytes`) holds only zeros: a part of the write the device never wrote. (A part of
/// a sector: the rest of the sector may hold older records, written before.)
fn touches_unwritten_sector(bytes: &[u8], range: Range<usize>) -> bool {
    let end = range.end.min(bytes.len());
    let mut from = range.start;
    while from < end {
        let to = ((from / SECTOR + 1) * SECTOR).min(end);
        if all_zeros(&bytes[from..to]) {
            return true;
        }
        from = to;
    }
    false
}

/// The whole record at the start of `bytes`, if there is one.
pub fn parse(bytes: &[u8]) -> Option<Record<'_>> {
    match found(bytes, 0) {
        Found::Whole(record) => Some(record),
        _ => None,
    }
}

/// What a log's records decide about themselves.
pub enum Verdict {
    /// The record is the log's next one.
    Take,
    /// The log ended before it (e.g. an older cycle's leftovers in a reused file).
    End,
    /// The record is valid but cannot be here.
    Corrupt(String),
}

/// What [`read_log`] found.
#[derive(Debug)]
pub struct Log<'a> {
    /// The log's records, in order.
    pub records: Vec<Record<'a>>,
    /// Where the last record ends: where the next write goes.
    pub end: u64,
    /// Whether a torn record follows `end` (to be cut off).
    pub torn: bool,
}

/// Where and why a log is corrupt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// The offset of the first bad record.
    pub offset: u64,
    /// What is wrong.
    pub reason: String,
}

/// The rules of one log, for [`read_log`].
pub struct Rules<B, L> {
    /// Decides, for each whole record in turn, whether it is the log's next one.
    pub belongs: B,
    /// Whether a whole record found after a bad one is a later record of the same log (one
    /// that would prove the bad one was not the last write).
    pub later: L,
    /// Bytes before this offset were synced: nothing in them can be torn. With `Some`, every
    /// byte from there on may be lost at a crash (the caller can rebuild it), so whatever is
    /// damaged there is torn; with `None`, the heuristics of the module's documentation decide.
    pub unsynced_from: Option<u64>,
}

/// Reads the records of one log from `bytes` (see the module's documentation).
pub fn read_log<'a, B, L>(bytes: &'a [u8], mut rules: Rules<B, L>) -> Result<Log<'a>, Damage>
where
    B: FnMut(&Record<'a>) -> Verdict,
    L: Fn(&Record<'a>) -> bool,
{
    let mut records = Vec::new();
    let mut at = 0usize;
    let damage = |offset: usize, reason: &str| Damage {
        offset: offset as u64,
        reason: reason.to_string(),
    };
    loop {
        let end = at as u64;
        let bad = match found(bytes, at) {
            Found::Whole(record) => match (rules.belongs)(&record) {
                Verdict::Take => {
                    at = record.end() as usize;
                    records.push(record);
                    continue;
                }
                Verdict::End => {
                    return Ok(Log {
                        records,
                        end,
                        torn: false,
                    })
                }
                Verdict::Corrupt(reason) => return Err(damage(at, &reason)),
            },
            Found::Cut if at >= bytes.len() => {
                return Ok(Log {
                    records,
                    end,
                    torn: false,
                })
            }
            bad => bad,
        };
        match rules.unsynced_from {
            Some(from) if end < from => {
                return Err(damage(at, "a damaged record in synced data"));
            }
            // Everything from here on may be lost, and is rebuilt by the caller.
            Some(_) => {
                return Ok(Log {
                    records,
                    end,
                    torn: true,
                })
            }
            None => {}
        }
        if matches!(bad, Found::Zeros) && all_zeros(&bytes[at..]) {
            // Never written: the log ends here (preallocated or zero-filled space).
            return Ok(Log {
                records,
                end,
                torn: false,
            });
        }
        // Writes are made in order, and a waited-for write starts only after the previous
        // one's sync returned: a second waited-for record after this one proves the first was
        // synced, and with it this one; one waited-for record may be the write under way.
        let followers = later_records(bytes, at, &rules.later);
        if followers.len() >= 2 {
            let reason = format!(
                "a damaged record, followed by synced records at bytes {} and {}",
                followers[0], followers[1]
            );
            return Err(damage(at, &reason));
        }
        let looks_torn = match bad {
            Found::Cut | Found::Zeros => true,
            Found::BadHeader => touches_unwritten_sector(bytes, at..at + HEADER),
            // The header and the payload may be separate writes: either one's part in a
            // sector may be missing. A record never waited for may be lost whole, but only
            // when it is the last.
            Found::BadPayload { flags, len } => {
                (flags & WAITED == 0 && followers.is_empty())
                    || touches_unwritten_sector(bytes, at..at + HEADER)
                    || touches_unwritten_sector(bytes, at + HEADER..at + HEADER + len)
            }
            Found::Whole(_) => false,
        };
        // A waited-for record with anything written after it was synced before it.
        let waited = matches!(bad, Found::BadPayload { flags, .. } if flags & WAITED != 0);
        if (waited && !followers.is_empty()) || !looks_torn {
            let reason = match followers.first() {
                Some(next) => {
                    format!("a damaged record, followed by a whole record at byte {next}")
                }
                None => "a damaged record that no crash can have torn".to_string(),
            };
            return Err(damage(at, &reason));
        }
        return Ok(Log {
            records,
            end,
            torn: true,
        });
    }
}

/// The offsets of the first two whole, waited-for records after `bad` that `later` claims for
/// the log. The header's own check rules out almost every offset before the payload is hashed.
fn later_records<'a>(
    bytes: &'a [u8],
    bad: usize,
    later: &impl Fn(&Record<'a>) -> bool,
) -> Vec<u64> {
    let mut found_at = Vec::new();
    let mut at = bad + 1;
    while at + HEADER <= bytes.len() && found_at.len() < 2 {
        match found(bytes, at) {
            Found::Whole(record) if record.waited() && later(&record) => {
                found_at.push(at as u64);
                at = record.end() as usize;
            }
            _ => at += 1,
        }
    }
    found_at
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_of(payloads: &[&[u8]]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for (seq, payload) in payloads.iter().enumerate() {
            bytes.extend(encode(seq as u64, WAITED, payload));
        }
        bytes
    }

    fn in_order(bytes: &[u8]) -> Result<Log<'_>, Damage> {
        let mut next = 0;
        read_log(
            bytes,
            Rules {
                belongs: |r: &Record| {
                    if r.seq != next {
                        return Verdict::Corrupt(format!("record {} where {next} belongs", r.seq));
                    }
                    next += 1;
                    Verdict::Take
                },
                later: |r: &Record| r.seq > 0,
                unsynced_from: None,
            },
        )
    }

    #[test]
    fn records_come_back_in_order() {
        let bytes = log_of(&[b"one", b"two", &[7; 2000]]);
        let log = in_order(&bytes).unwrap();
        let payloads: Vec<&[u8]> = log.records.iter().map(|r| r.payload).collect();
        assert_eq!(payloads, vec![&b"one"[..], b"two", &[7; 2000]]);
        assert_eq!(log.end, bytes.len() as u64);
        assert!(!log.torn);
    }

    #[test]
    fn a_record_cut_by_the_end_of_the_file_is_torn() {
        let bytes = log_of(&[b"one", &[9; 700]]);
        for cut in [bytes.len() - 1, bytes.len() - 700, HEADER + 3 + 5] {
            let log = in_order(&bytes[..cut]).unwrap();
            assert_eq!(log.records.len(), 1, "cut at {cut}");
            assert_eq!(log.end, (HEADER + 3) as u64);
            assert!(log.torn);
        }
    }

    #[test]
    fn a_flipped_byte_in_the_last_record_is_corruption() {
        let mut bytes = log_of(&[b"one", &[9; 700]]);
        let last = bytes.len() - 10;
        bytes[last] ^= 1;
        let damage = in_order(&bytes).unwrap_err();
        assert_eq!(damage.offset, (HEADER + 3) as u64);
    }

    #[test]
    fn a_flipped_byte_before_a_valid_record_is_corruption() {
        let mut bytes = log_of(&[b"one", b"two", b"three"]);
        bytes[HEADER + 1] ^= 0x40;
        let damage = in_order(&bytes).unwrap_err();
        assert_eq!(damage.offset, 0);
        assert!(
            damage.reason.contains("followed by synced"),
            "{}",
            damage.reason
        );
    }

    #[test]
    fn a_last_record_with_an_unwritten_sector_is_torn() {
        let mut bytes = log_of(&[b"one", &[9; 3000]]);
        let sector = bytes.len() / SECTOR - 1;
        bytes[sector * SECTOR..(sector + 1) * SECTOR].fill(0);
        let log = in_order(&bytes).unwrap();
        assert_eq!(log.records.len(), 1);
        assert!(log.torn);
    }

    #[test]
    fn zeros_after_the_last_record_end_the_log() {
        let mut bytes = log_of(&[b"one"]);
        bytes.resize(4096, 0);
        let log = in_order(&bytes).unwrap();
        assert_eq!((log.records.len(), log.torn), (1, false));
    }

    #[test]
    fn a_record_out_of_place_is_corruption() {
        let mut bytes = encode(0, WAITED, b"a");
        bytes.extend(encode(2, WAITED, b"c"));
        assert!(in_order(&bytes)
            .unwrap_err()
            .reason
            .contains("where 1 belongs"));
    }

    #[test]
    fn a_damaged_record_in_synced_data_is_corruption_and_after_it_torn() {
        let mut bytes = log_of(&[b"one", b"two"]);
        let second = HEADER + 3;
        bytes[second + HEADER] ^= 1;
        let rules = |unsynced_from| Rules {
            belongs: |_: &Record| Verdict::Take,
            later: |_: &Record| false,
            unsynced_from: Some(unsynced_from),
        };
        assert!(read_log(&bytes, rules(bytes.len() as u64)).is_err());
        let log = read_log(&bytes, rules(second as u64)).unwrap();
        assert_eq!((log.records.len(), log.torn), (1, true));
    }
}
