//! A node whose storage cannot give back decided entries stops and says so: a subscriber
//! waiting for those entries used to make the node's thread read, get nothing and try again
//! forever, without ticking or answering anyone.

mod common;

use common::*;
use omnipaxos::simulation::{FaultMode, SimStorage};
use omnipaxos::OmniPaxos;
use omnipaxos_runtime::transport::memory::MemoryNetwork;
use omnipaxos_runtime::{spawn_actor, AppendError, OmniPaxosEvent, RuntimeConfig};
use omnipaxos_storage::memory_storage::MemoryStorage;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_read_of_decided_entries_stops_the_node_and_reports_it() {
    let storage = SimStorage::new(MemoryStorage::<u64>::default());
    let op: OmniPaxos<u64, _> = cluster_config(&[1])
        .build_for_server(server_config(1), storage.clone())
        .expect("valid config");
    let net = MemoryNetwork::new();
    let handle = spawn_actor(op, RuntimeConfig::default(), net.transport());
    for v in 0..5 {
        within("append", handle.append_notify(v))
            .await
            .expect("a one-node cluster decides alone");
    }
    let mut events = handle.subscribe_events();
    storage.set_fault(FaultMode::FailEntryReads);
    let _stream = within("subscribe", handle.subscribe_decided(0))
        .await
        .expect("subscribed");
    let error = within("the storage failure to be reported", async {
        loop {
            match events.recv().await {
                Ok(OmniPaxosEvent::StorageFailed { error }) => return error,
                Ok(_) => continue,
                Err(e) => panic!("events ended before the failure was reported: {e}"),
            }
        }
    })
    .await;
    assert!(error.contains("reading decided entries 0..5"), "{error}");
    let metrics = handle.metrics().borrow().clone();
    assert!(metrics.storage_failed, "the metrics say so too");
    // The node stopped: it takes nothing more, and says why it cannot.
    assert!(matches!(
        within("append after the failure", handle.append_notify(9)).await,
        Err(AppendError::Shutdown)
    ));
}
