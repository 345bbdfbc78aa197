//! Fail-recovery on the simulator with `PersistentStorage`: servers crash and restart by
//! reopening their store directories, the whole cluster crashes at once, and the guide's
//! fail-recovery code. The simulator's invariants (agreement, validity, a decided index that
//! never goes down, also across restarts) are checked after every step.

use omnipaxos::macros::Entry;
use omnipaxos::simulation::{NetworkConfig, SimConfig, Simulation};
use omnipaxos::util::{LogEntry, NodeId};
use omnipaxos::{ClusterConfig, OmniPaxos, OmniPaxosConfig, ServerConfig};
use omnipaxos_storage::persistent_storage::{PersistentStorage, PersistentStorageConfig};
use std::path::Path;

type Sim = Simulation<u64, PersistentStorage<u64>>;

fn path_of(root: &Path, pid: NodeId) -> String {
    root.join(format!("node-{pid}"))
        .to_string_lossy()
        .to_string()
}

fn open(root: &Path, pid: NodeId) -> PersistentStorage<u64> {
    PersistentStorage::open(PersistentStorageConfig::with_path(path_of(root, pid)))
}

fn persistent_cluster(root: &Path, n: u64, seed: u64) -> Sim {
    let mut config = SimConfig::new((1..=n).collect(), seed);
    config.server_config.election_tick_timeout = 10;
    config.network = NetworkConfig::lossy(0.02, 0.02, 2);
    Simulation::new(config, |pid| open(root, pid))
}

/// Crashes `pid`, reopens its store from disk and restarts it.
fn crash_and_recover(sim: &mut Sim, root: &Path, pid: NodeId) {
    sim.crash(pid);
    sim.storage(pid).unwrap().reopen(|old| {
        drop(old); // close the database, as a dying process would
        open(root, pid)
    });
    sim.restart(pid).unwrap();
}

#[test]
fn servers_restart_from_their_directories_and_catch_up() {
    for seed in 0..3 {
        let root = tempfile::tempdir().unwrap();
        let mut sim = persistent_cluster(root.path(), 3, seed);
        let mut next = seed * 1000;
        for round in 0..12 {
            for _ in 0..5 {
                next += 1;
                let pids = sim.live_pids();
                let pid = *sim.rng().pick(&pids).unwrap();
                let _ = sim.append(pid, next);
            }
            sim.run(10);
            let victim = 1 + (seed + round) % 3;
            crash_and_recover(&mut sim, root.path(), victim);
        }
        sim.set_network(NetworkConfig::reliable());
        let leader = sim.run_until_stable_leader(500).unwrap();
        sim.append(leader, 999_999).unwrap();
        let target = sim.chosen().len() + 1;
        sim.run_until(500, |s| s.all_decided(target))
            .expect("everyone catches up");
    }
}

#[test]
fn the_whole_cluster_crashing_at_once_loses_no_decided_entry() {
    let root = tempfile::tempdir().unwrap();
    let mut sim = persistent_cluster(root.path(), 3, 7);
    sim.set_network(NetworkConfig::reliable());
    let leader = sim.run_until_stable_leader(100).unwrap();
    for v in 0..30 {
        sim.append(leader, v).unwrap();
    }
    sim.run_until(100, |s| s.all_decided(30)).unwrap();
    let decided_before: Vec<usize> = (1..=3)
        .map(|p| sim.server(p).unwrap().get_decided_idx())
        .collect();
    for pid in 1..=3 {
        sim.crash(pid);
    }
    for pid in 1..=3 {
        sim.storage(pid).unwrap().reopen(|old| {
            drop(old);
            open(root.path(), pid)
        });
        sim.restart(pid).unwrap();
        assert_eq!(
            sim.server(pid).unwrap().get_decided_idx(),
            decided_before[pid as usize - 1],
            "server {pid} restarts with its decided index"
        );
    }
    let leader = sim
        .run_until_stable_leader(200)
        .expect("the cluster elects again");
    sim.append(leader, 30).unwrap();
    sim.run_until(200, |s| s.all_decided(31)).unwrap();
    let log: Vec<u64> = sim
        .server(1)
        .unwrap()
        .read_decided_suffix(0)
        .unwrap()
        .into_iter()
        .map(|e| match e {
            LogEntry::Decided(v) => v,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(log, (0..31).collect::<Vec<_>>());
}

#[derive(Clone, Debug, Entry, serde::Serialize, serde::Deserialize)]
pub struct KeyValue {
    pub key: String,
    pub value: u64,
}

/// The guide's fail-recovery code, as written there.
#[test]
fn the_guides_fail_recovery_code() {
    let dir = tempfile::tempdir().unwrap();
    let my_path = dir
        .path()
        .join("my_path_before_crash")
        .to_string_lossy()
        .to_string();
    let omnipaxos_config = OmniPaxosConfig {
        cluster_config: ClusterConfig {
            configuration_id: 1,
            nodes: vec![1],
            ..Default::default()
        },
        server_config: ServerConfig {
            pid: 1,
            ..Default::default()
        },
    };
    {
        let mut persist_conf = PersistentStorageConfig::default();
        persist_conf.set_path(my_path.to_string());
        let storage: PersistentStorage<KeyValue> = PersistentStorage::open(persist_conf);
        let mut omni_paxos: OmniPaxos<KeyValue, PersistentStorage<KeyValue>> =
            omnipaxos_config.clone().build(storage).unwrap();
        omni_paxos.tick();
        omni_paxos
            .append(KeyValue {
                key: "a".into(),
                value: 1,
            })
            .unwrap();
        omni_paxos.take_outgoing_messages(&mut Vec::new());
        assert_eq!(omni_paxos.get_decided_idx(), 1);
    } // the process "crashes"

    /* Re-creating our node after a crash... */

    // Configuration from previous storage
    let mut persist_conf = PersistentStorageConfig::default();
    persist_conf.set_path(my_path.to_string()); // set the path of the persistent storage

    // Re-create storage with previous state, then create `OmniPaxos`
    let recovered_storage: PersistentStorage<KeyValue> = PersistentStorage::open(persist_conf);
    let mut recovered_paxos: OmniPaxos<KeyValue, PersistentStorage<KeyValue>> =
        omnipaxos_config.build(recovered_storage).unwrap();
    assert_eq!(recovered_paxos.get_decided_idx(), 1);
    for _ in 0..3 {
        recovered_paxos.tick();
        recovered_paxos.take_outgoing_messages(&mut Vec::new());
    }
    recovered_paxos
        .append(KeyValue {
            key: "b".into(),
            value: 2,
        })
        .unwrap();
    recovered_paxos.take_outgoing_messages(&mut Vec::new());
    assert_eq!(
        recovered_paxos.get_decided_idx(),
        2,
        "the recovered node leads again"
    );
}
