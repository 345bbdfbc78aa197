//! Issue 15's scenarios at 50 MB (`kv_store large-state`, see `docs/large_state.md`): a
//! cluster loaded with 500 values of 100 kB, every key written again while every node
//! checkpoints and compacts, a follower restarted after the others compacted past it, and a
//! node joining by reconfiguration. Both copies go through chunked state transfers of at most
//! 1 MiB, no frame between nodes is above the transport's limit, nobody changes leader without
//! a fault, every node's disk and memory stay within twice the data, and every key reads back
//! with its last value from every node.

use kv_store::large_state::{run, Spec, FRAME_LIMIT};
use std::path::PathBuf;

const CHUNK: usize = 1 << 20;

#[test]
fn fifty_megabytes_catch_up_join_and_rewrite_without_elections_within_bounds() {
    let spec = Spec {
        keys: 500,
        value_bytes: 100_000,
        chunk_bytes: CHUNK,
    };
    let report = run(PathBuf::from(env!("CARGO_BIN_EXE_kv_store")), spec).unwrap();
    println!("{}", report.table());
    assert_eq!(report.violations(), Vec::<String>::new());
    // What `violations` checks, spelled out for the frame-size requirement.
    assert!(report.largest_chunk > 0 && report.largest_chunk <= CHUNK as u64);
    assert!(report.largest_frame > 0 && report.largest_frame <= FRAME_LIMIT + 5);
    assert!(report.catch_up.bytes >= 50_000_000 && report.join.bytes >= 50_000_000);
    for pid in [1, 2, 4] {
        assert_eq!(report.verified.get(&pid), Some(&500), "node {pid}");
    }
}
