//! What arrives off the wire is untrusted: garbage and lying length prefixes decode to errors,
//! never to a panic or a huge allocation; valid messages round-trip.

use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos_runtime::wire::{decode, encode, RemoteOutcome, WireMessage};

#[test]
fn messages_round_trip() {
    let msgs: Vec<WireMessage<u64>> = vec![
        WireMessage::Append {
            incarnation: 7,
            ballot: Ballot::default(),
            entries: vec![(1, 10), (2, 20)],
        },
        WireMessage::AppendOutcome {
            incarnation: 7,
            outcomes: vec![
                (1, RemoteOutcome::Decided { idx: 4 }),
                (2, RemoteOutcome::NotLeader),
            ],
        },
        WireMessage::Hello { incarnation: 9 },
    ];
    for msg in msgs {
        let mut bytes = Vec::new();
        encode(&msg, &mut bytes).expect("encode");
        let back: WireMessage<u64> = decode(&bytes).expect("decode");
        assert_eq!(format!("{back:?}"), format!("{msg:?}"));
        // Trailing bytes are refused.
        bytes.push(0);
        assert!(decode::<u64>(&bytes).is_err());
    }
}

#[test]
fn a_length_prefix_that_lies_is_an_error_not_an_allocation() {
    // Append (variant 1), incarnation 0, a zero ballot, then an entry count of u64::MAX.
    let mut bytes = vec![1u8, 0, 0, 0, 0, 0];
    bytes.push(253); // bincode varint: a u64 follows
    bytes.extend_from_slice(&u64::MAX.to_le_bytes());
    assert!(decode::<u64>(&bytes).is_err());
}

#[test]
fn garbage_never_panics() {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for len in 0..2000usize {
        let bytes: Vec<u8> = (0..len % 257)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let _ = decode::<u64>(&bytes);
    }
}
