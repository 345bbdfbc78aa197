//! Messages larger than a frame: sent as a sequence of `PART` frames, none above
//! `max_frame_bytes`, and put together again by the receiver.
//!
//! A log synchronisation that carries a large snapshot (a follower back after the log was
//! compacted) is one message of the protocol however large the snapshot is. Refusing it, as the
//! frame limit alone did, left such a follower behind for good. Sending it as one frame would
//! hold every other message to that peer behind it, heartbeats included, long enough to start
//! an election. So its parts (at most 1 MiB each) go out one per write, and between two parts whatever heartbeats
//! came in the meantime go first; every other message waits behind the large one, in order (the
//! protocol tolerates reordering, but a follower that is being synchronised ignores the entries
//! that overtake the synchronisation and then needs another).
//!
//! The kinds that can be large (`AcceptSync`, `Handover`) are encoded on Tokio's blocking pool,
//! and a message that arrived in parts is decoded there (by the receiving connection's task,
//! which keeps reading and delivering heartbeats meanwhile, and holds other messages until it
//! is delivered): a large encoding or decoding holds up no heartbeat either.
//!
//! A `PART` frame's body: the whole message's length (8 bytes, big-endian), this part's offset
//! in it (8 bytes), then the part's bytes. Parts of a message come in order on one connection;
//! a message is delivered when its last part arrives. A broken connection loses the parts
//! received on it (the protocol sends the message again on the next connection).

use crate::wire::{RuntimeEntry, WireMessage};
use std::collections::VecDeque;
use tokio::task::JoinHandle;

/// Bytes of a `PART` frame body before the part's own bytes.
pub(super) const PART_HEADER: usize = 16;

/// The most bytes of a message in one part (less if `max_frame_bytes` is smaller): a part is
/// one write, which must finish within `peer_timeout` even on a slow link (1 MiB takes 84 ms at
/// 100 Mbit/s), and a heartbeat waits for at most one part.
pub(super) const PART_BYTES: usize = 1 << 20;

/// A message that may be large (see [`may_be_large`]) being encoded on Tokio's blocking pool
/// or sent in parts, and the messages held behind it.
pub(super) struct Outgoing<T: RuntimeEntry> {
    stage: Stage,
    /// Messages that came after it (heartbeats excepted), in order.
    pub(super) held: VecDeque<WireMessage<T>>,
}

enum Stage {
    /// Being encoded apart; the message's kind.
    Encoding(JoinHandle<Result<Vec<u8>, String>>, &'static str),
    /// Encoded, sent part by part.
    Sending { body: Vec<u8>, sent: usize },
}

impl<T: RuntimeEntry> Outgoing<T> {
    /// Starts encoding `msg` off the caller's task.
    pub(super) fn encode(msg: WireMessage<T>) -> Self {
        let kind = msg.kind();
        let task = tokio::task::spawn_blocking(move || {
            let mut body = Vec::new();
            crate::wire::encode(&msg, &mut body).map(|()| body)
        });
        Self {
            stage: Stage::Encoding(task, kind),
            held: VecDeque::new(),
        }
    }

    /// Sends an encoded message in parts.
    pub(super) fn send(body: Vec<u8>) -> Self {
        Self {
            stage: Stage::Sending { body, sent: 0 },
            held: VecDeque::new(),
        }
    }

    /// If the encoding finished: the message's kind and its bytes (or why it failed).
    pub(super) async fn encoded(&mut self) -> Option<(&'static str, Result<Vec<u8>, String>)> {
        let Stage::Encoding(task, kind) = &mut self.stage else {
            return None;
        };
        if !task.is_finished() {
            return None;
        }
        let kind = *kind;
        let encoded = task.await.unwrap_or_else(|e| Err(e.to_string()));
        // Nothing left to send unless `start_sending` gives it parts.
        self.stage = Stage::Sending {
            body: Vec::new(),
            sent: 0,
        };
        Some((kind, encoded))
    }

    pub(super) fn is_encoding(&self) -> bool {
        matches!(self.stage, Stage::Encoding(..))
    }

    /// Whether parts are left to send.
    pub(super) fn is_sending(&self) -> bool {
        matches!(&self.stage, Stage::Sending { body, sent } if *sent < body.len())
    }

    /// Continues with `body` in parts.
    pub(super) fn start_sending(&mut self, body: Vec<u8>) {
        self.stage = Stage::Sending { body, sent: 0 };
    }

    /// The next `PART` frame body, with at most `part_bytes` of the message; `false` once all
    /// were taken (or while it is being encoded).
    pub(super) fn next_part(&mut self, part_bytes: usize, out: &mut Vec<u8>) -> bool {
        let Stage::Sending { body, sent } = &mut self.stage else {
            return false;
        };
        if *sent >= body.len() {
            return false;
        }
        let end = (*sent + part_bytes.max(1)).min(body.len());
        out.clear();
        out.extend_from_slice(&(body.len() as u64).to_be_bytes());
        out.extend_from_slice(&(*sent as u64).to_be_bytes());
        out.extend_from_slice(&body[*sent..end]);
        *sent = end;
        true
    }
}

/// Whether `msg` may overtake a large message to the same peer: heartbeats, which carry no
/// order and whose delay would start an election.
pub(super) fn may_overtake<T: RuntimeEntry>(msg: &WireMessage<T>) -> bool {
    matches!(
        msg,
        WireMessage::Protocol {
            msg: omnipaxos::messages::Message::BLE(_),
            ..
        }
    )
}

/// Whether encoding `msg` may take long: the kinds that carry a log or a snapshot.
pub(super) fn may_be_large<T: RuntimeEntry>(msg: &WireMessage<T>) -> bool {
    matches!(msg.kind(), "AcceptSync" | "Handover")
}

/// Parts received on one connection, until the message is whole.
#[derive(Default)]
pub(super) struct Reassembly {
    total: usize,
    bytes: Vec<u8>,
}

impl Reassembly {
    /// Takes one `PART` frame body; returns the whole message's bytes with its last part.
    /// A part out of order, or a message above `max_message_bytes`, is an error (the
    /// connection is closed, as for any malformed frame).
    pub(super) fn add(
        &mut self,
        body: &[u8],
        max_message_bytes: usize,
    ) -> Result<Option<Vec<u8>>, String> {
        let (Some(total), Some(offset)) = (read_u64(body, 0), read_u64(body, 8)) else {
            return Err("a part shorter than its header".into());
        };
        let part = &body[PART_HEADER..];
        let (total, offset) = (total as usize, offset as usize);
        if total > max_message_bytes {
            return Err(format!(
                "a message of {total} bytes, above max_message_bytes ({max_message_bytes})"
            ));
        }
        if offset == 0 {
            self.total = total;
            self.bytes.clear();
        }
        if total != self.total || offset != self.bytes.len() || part.is_empty() {
            return Err(format!(
                "a part at {offset} of a {total}-byte message, expected one at {} of {}",
                self.bytes.len(),
                self.total
            ));
        }
        if offset + part.len() > total {
            return Err(format!("a part beyond the end of a {total}-byte message"));
        }
        self.bytes.extend_from_slice(part);
        if self.bytes.len() < total {
            return Ok(None);
        }
        self.total = 0;
        Ok(Some(std::mem::take(&mut self.bytes)))
    }
}

fn read_u64(body: &[u8], at: usize) -> Option<u64> {
    let bytes: [u8; 8] = body.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    type Out = Outgoing<u64>;

    fn parts_of(message: &[u8], part_bytes: usize) -> Vec<Vec<u8>> {
        let mut out = Out::send(message.to_vec());
        let mut parts = Vec::new();
        let mut body = Vec::new();
        while out.next_part(part_bytes, &mut body) {
            assert!(body.len() <= PART_HEADER + part_bytes);
            parts.push(body.clone());
        }
        assert!(!out.is_sending());
        parts
    }

    #[test]
    fn a_message_comes_back_whole_from_its_parts() {
        let message: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        for part_bytes in [1, 7, 4096, 9_999, 10_000, 20_000] {
            let parts = parts_of(&message, part_bytes);
            assert_eq!(parts.len(), message.len().div_ceil(part_bytes));
            let mut reassembly = Reassembly::default();
            let (last, rest) = parts.split_last().unwrap();
            for part in rest {
                assert_eq!(reassembly.add(part, usize::MAX), Ok(None));
            }
            assert_eq!(reassembly.add(last, usize::MAX), Ok(Some(message.clone())));
        }
    }

    #[test]
    fn parts_out_of_order_short_or_too_large_are_refused() {
        let message = vec![7u8; 100];
        let parts = parts_of(&message, 30);
        // A part skipped.
        let mut r = Reassembly::default();
        r.add(&parts[0], usize::MAX).unwrap();
        assert!(r.add(&parts[2], usize::MAX).is_err());
        // A part that does not start a message, with nothing before it.
        assert!(Reassembly::default().add(&parts[1], usize::MAX).is_err());
        // Shorter than its header, or empty.
        assert!(Reassembly::default().add(&[0; 10], usize::MAX).is_err());
        let mut empty = parts[0][..PART_HEADER].to_vec();
        assert!(Reassembly::default().add(&empty, usize::MAX).is_err());
        // Claims more than the limit.
        assert!(Reassembly::default().add(&parts[0], 99).is_err());
        // A part that runs past the length it announced.
        empty[..8].copy_from_slice(&5u64.to_be_bytes());
        empty.extend_from_slice(&[1; 6]);
        assert!(Reassembly::default().add(&empty, usize::MAX).is_err());
        // A new message may start after an abandoned one.
        let mut r = Reassembly::default();
        r.add(&parts[0], usize::MAX).unwrap();
        for part in &parts[..parts.len() - 1] {
            assert_eq!(r.add(part, usize::MAX), Ok(None));
        }
        assert_eq!(r.add(parts.last().unwrap(), usize::MAX), Ok(Some(message)));
    }

    #[test]
    fn only_heartbeats_overtake_a_large_message() {
        use omnipaxos::messages::ballot_leader_election::{
            BLEMessage, HeartbeatMsg, HeartbeatRequest,
        };
        use omnipaxos::messages::Message;
        let heartbeat: WireMessage<u64> = WireMessage::Protocol {
            config_id: 1,
            msg: Message::BLE(BLEMessage {
                from: 1,
                to: 2,
                msg: HeartbeatMsg::Request(HeartbeatRequest { round: 3 }),
            }),
        };
        assert!(may_overtake(&heartbeat));
        let others: [WireMessage<u64>; 3] = [
            WireMessage::Hello { incarnation: 1 },
            WireMessage::AppendOutcome {
                incarnation: 1,
                outcomes: Vec::new(),
            },
            WireMessage::HandoverRequest { next_config_id: 2 },
        ];
        assert!(others.iter().all(|m| !may_overtake(m)));
    }
}
