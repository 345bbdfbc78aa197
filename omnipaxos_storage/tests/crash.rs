//! Crash tests: a child process (this test binary, re-executed) writes to a `PersistentStorage`
//! (or a `JournalStorage`) and acknowledges every write that returned `Ok`; the parent kills it with SIGKILL at a random
//! acknowledgement, reopens the store and checks that every acknowledged entry and decided index
//! survived and that the state is consistent. 200 kill points by default, `CRASH_ITERS=N` for
//! more. Every store is killed 20 times in a row, so recovery from a recovered store is tested;
//! every other store has a tiny write-ahead log (or journal rewrite threshold), so kills also
//! land in and around checkpoints (rewrites).

mod common;
use common::*;
use omnipaxos::simulation::SimRng;
use omnipaxos::storage::{Storage, StorageOp};
use omnipaxos_storage::journal_storage::{JournalStorage, JournalStorageConfig};
use omnipaxos_storage::persistent_storage::{PersistentStorage, PersistentStorageConfig};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

const CHILD_DIR: &str = "OMNIPAXOS_CRASH_CHILD_DIR";
const CHILD_SEED: &str = "OMNIPAXOS_CRASH_CHILD_SEED";
const CHILD_LOG_BYTES: &str = "OMNIPAXOS_CRASH_CHILD_LOG_BYTES";
const CHILD_KIND: &str = "OMNIPAXOS_CRASH_CHILD_KIND";

/// Opens a store of `kind` ("journal" or the sled-backed one) in `dir`; `log_bytes` sizes its
/// write-ahead log (or its journal's rewrite threshold).
fn open_store(
    kind: &str,
    dir: &str,
    log_bytes: Option<u64>,
) -> Result<Box<dyn Storage<E>>, String> {
    if kind == "journal" {
        let mut config = JournalStorageConfig::with_path(dir);
        if let Some(bytes) = log_bytes {
            config.compact_at_bytes = bytes;
        }
        return JournalStorage::<E>::open(config)
            .map(|s| Box::new(s) as Box<dyn Storage<E>>)
            .map_err(|e| e.to_string());
    }
    let mut config = PersistentStorageConfig::with_path(dir.to_string());
    if let Some(bytes) = log_bytes {
        config.set_write_ahead_log_bytes(bytes);
    }
    PersistentStorage::<E>::try_open(config)
        .map(|s| Box::new(s) as Box<dyn Storage<E>>)
        .map_err(|e| e.to_string())
}
const KILLS_PER_STORE: u64 = 20;

/// The child's side; does nothing unless started by the parent test. Entry `i` holds value `i`,
/// so any lost or misplaced entry shows.
#[test]
fn crash_child_writer() {
    let (Ok(dir), Ok(seed)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_SEED)) else {
        return;
    };
    let mut rng = SimRng::new(seed.parse().unwrap());
    let log_bytes = std::env::var(CHILD_LOG_BYTES)
        .ok()
        .and_then(|b| b.parse().ok());
    let kind = std::env::var(CHILD_KIND).unwrap_or_default();
    let mut store = open_store(&kind, &dir, log_bytes).unwrap();
    let mut log_end = store.get_log_len().unwrap();
    let mut decided = store.get_decided_idx().unwrap();
    let mut out = std::io::stdout().lock();
    for _ in 0..100_000 {
        let n = rng.range(1, 20) as usize;
        let entries: Vec<E> = (log_end..log_end + n).map(|i| E(i as u64)).collect();
        let new_decided = rng.range(decided as u64, (log_end + n) as u64) as usize;
        match rng.range(0, 2) {
            0 => store
                .write_atomically(vec![
                    StorageOp::AppendEntries(entries),
                    StorageOp::SetDecidedIndex(new_decided),
                ])
                .unwrap(),
            1 => {
                store.append_entries(entries).unwrap();
                store.set_decided_idx(new_decided).unwrap();
            }
            _ => {
                // Rewrite the undecided tail with the same values, as a log sync would.
                let from = rng.range(decided as u64, log_end as u64) as usize;
                let tail: Vec<E> = (from..log_end + n).map(|i| E(i as u64)).collect();
                store.append_on_prefix(from, tail).unwrap();
                store.set_decided_idx(new_decided).unwrap();
            }
        }
        log_end += n;
        decided = new_decided;
        writeln!(out, "ack {log_end} {decided}").unwrap();
        out.flush().unwrap();
    }
}

/// Every other store runs with a write-ahead log of 2 KiB: a checkpoint every few writes, so
/// kills land during checkpoints and right after a new log cycle began, too.
fn log_bytes(it: u64) -> u64 {
    match (it / KILLS_PER_STORE) % 2 {
        0 => 16 << 20,
        _ => 2048,
    }
}

fn spawn_child(kind: &str, dir: &str, seed: u64) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .env(CHILD_LOG_BYTES, log_bytes(seed).to_string())
        .env(CHILD_KIND, kind)
        .args([
            "crash_child_writer",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir)
        .env(CHILD_SEED, seed.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("re-execute the test binary")
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    survive_sigkill("persistent");
}

#[test]
fn acknowledged_writes_to_a_journal_survive_sigkill() {
    survive_sigkill("journal");
}

fn survive_sigkill(kind: &str) {
    let iters: u64 = std::env::var("CRASH_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let root = tempfile::tempdir().unwrap();
    let mut acked = (0usize, 0usize); // (log end, decided) acknowledged so far in this store
    for it in 0..iters {
        if it % KILLS_PER_STORE == 0 {
            acked = (0, 0);
        }
        let dir = root.path().join(format!("store-{}", it / KILLS_PER_STORE));
        let dir = dir.to_string_lossy().to_string();
        let kill_after = SimRng::new(it).range(1, 40);
        let mut child = spawn_child(kind, &dir, it);
        let stdout = child.stdout.take().unwrap();
        let mut acks = 0;
        for line in BufReader::new(stdout).lines() {
            let Some(ack) = line.unwrap().strip_prefix("ack ").map(str::to_owned) else {
                continue;
            };
            let mut parts = ack.split(' ').map(|p| p.parse::<usize>().unwrap());
            acked = (parts.next().unwrap(), parts.next().unwrap());
            acks += 1;
            if acks == kill_after {
                child.kill().unwrap(); // SIGKILL
                break;
            }
        }
        child.wait().unwrap();
        assert_eq!(acks, kill_after, "iteration {it}: the child stopped early");

        let store = open_store(kind, &dir, None)
            .unwrap_or_else(|e| panic!("iteration {it}: the store does not reopen: {e}"));
        let log_len = store.get_log_len().unwrap();
        let decided = store.get_decided_idx().unwrap();
        assert!(
            log_len >= acked.0,
            "iteration {it}: {log_len} entries, {} acknowledged",
            acked.0
        );
        assert!(
            decided >= acked.1,
            "iteration {it}: decided {decided}, {} acknowledged",
            acked.1
        );
        assert!(
            decided <= log_len,
            "iteration {it}: decided {decided} beyond the log {log_len}"
        );
        let entries = store.get_entries(0, log_len).unwrap();
        assert_eq!(entries.len(), log_len);
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(e.0, i as u64, "iteration {it}: entry {i} holds {e:?}");
        }
        acked = (log_len, decided);
    }
}
