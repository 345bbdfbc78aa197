//! A replicated log on three servers in one process, each on its own thread, with channels as
//! the network and a real 5 ms tick. It shows an election, entries decided everywhere, the
//! leader crashing, a new leader taking over, and the crashed server restarting from its storage
//! and catching up. Exits 0 if every server ends with the same log, 1 otherwise.
//!
//! Run it with `cargo run --release -p local_cluster`.

use omnipaxos::macros::Entry;
use omnipaxos::messages::Message;
use omnipaxos::util::{LogEntry, NodeId};
use omnipaxos::{ClusterConfig, OmniPaxos, ServerConfig};
use omnipaxos_storage::memory_storage::MemoryStorage;
use std::collections::BTreeMap;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

#[derive(Clone, Debug, PartialEq, Entry)]
struct KeyValue {
    key: String,
    value: u64,
}

/// The storage of a server, kept by `main` so that it outlives a crash of the server's thread.
type Storage = Arc<Mutex<MemoryStorage<KeyValue>>>;
type Server = OmniPaxos<KeyValue, Storage>;

const TICK: Duration = Duration::from_millis(5);
const NODES: [NodeId; 3] = [1, 2, 3];

enum Input {
    Network(Message<KeyValue>),
    Append(KeyValue),
    Reconnected(NodeId),
    Crash,
}

/// What a server thread publishes for `main` to watch.
#[derive(Clone, Default)]
struct Status {
    leader: Option<(NodeId, bool)>,
    decided: Vec<KeyValue>,
}

type Mailboxes = Arc<Mutex<BTreeMap<NodeId, Sender<Input>>>>;
type Statuses = Arc<Mutex<BTreeMap<NodeId, Status>>>;

fn build(pid: NodeId, storage: Storage) -> Server {
    let cluster = ClusterConfig {
        configuration_id: 1,
        nodes: NODES.to_vec(),
        ..Default::default()
    };
    let server = ServerConfig {
        pid,
        election_tick_timeout: 4, // a heartbeat round every 20 ms
        resend_message_tick_timeout: 20,
        ..Default::default()
    };
    cluster
        .build_for_server(server, storage)
        .expect("the demo's configuration is valid")
}

/// Runs one server until it receives `Input::Crash`.
fn run_server(
    mut server: Server,
    inbox: Receiver<Input>,
    mailboxes: Mailboxes,
    statuses: Statuses,
) {
    let pid = server.get_pid();
    let mut next_tick = Instant::now() + TICK;
    let mut outgoing = Vec::new();
    loop {
        match inbox.recv_timeout(next_tick.saturating_duration_since(Instant::now())) {
            Ok(Input::Network(msg)) => server.handle_incoming(msg),
            Ok(Input::Append(kv)) => server.append(kv).expect("the log is not sealed"),
            Ok(Input::Reconnected(peer)) => server.reconnected(peer),
            Ok(Input::Crash) | Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {
                server.tick();
                next_tick += TICK;
            }
        }
        server.take_outgoing_messages(&mut outgoing);
        let boxes = mailboxes.lock().unwrap();
        for msg in outgoing.drain(..) {
            if let Some(mailbox) = boxes.get(&msg.get_receiver()) {
                let _ = mailbox.send(Input::Network(msg)); // a crashed peer loses it
            }
        }
        drop(boxes);
        let decided = server
            .read_decided_suffix(0)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|e| match e {
                LogEntry::Decided(kv) => Some(kv),
                _ => None,
            })
            .collect();
        statuses.lock().unwrap().insert(
            pid,
            Status {
                leader: server.get_current_leader(),
                decided,
            },
        );
    }
}

struct Cluster {
    storages: BTreeMap<NodeId, Storage>,
    mailboxes: Mailboxes,
    statuses: Statuses,
    threads: BTreeMap<NodeId, JoinHandle<()>>,
}

impl Cluster {
    fn start() -> Self {
        let mut cluster = Cluster {
            storages: NODES
                .iter()
                .map(|&pid| (pid, Arc::new(Mutex::new(MemoryStorage::default()))))
                .collect(),
            mailboxes: Arc::default(),
            statuses: Arc::default(),
            threads: BTreeMap::new(),
        };
        for pid in NODES {
            cluster.spawn(pid);
        }
        cluster
    }

    fn spawn(&mut self, pid: NodeId) {
        let server = build(pid, self.storages[&pid].clone());
        let (tx, rx) = channel();
        self.mailboxes.lock().unwrap().insert(pid, tx);
        let (mailboxes, statuses) = (self.mailboxes.clone(), self.statuses.clone());
        let handle = thread::spawn(move || run_server(server, rx, mailboxes, statuses));
        self.threads.insert(pid, handle);
    }

    fn send(&self, pid: NodeId, input: Input) {
        if let Some(mailbox) = self.mailboxes.lock().unwrap().get(&pid) {
            let _ = mailbox.send(input);
        }
    }

    fn crash(&mut self, pid: NodeId) {
        self.send(pid, Input::Crash);
        self.mailboxes.lock().unwrap().remove(&pid);
        if let Some(handle) = self.threads.remove(&pid) {
            handle.join().expect("server thread ended cleanly");
        }
        self.statuses.lock().unwrap().remove(&pid);
    }

    fn restart(&mut self, pid: NodeId) {
        self.spawn(pid);
        for other in NODES.iter().filter(|p| **p != pid) {
            self.send(*other, Input::Reconnected(pid));
        }
    }

    fn status(&self) -> BTreeMap<NodeId, Status> {
        self.statuses.lock().unwrap().clone()
    }

    /// Waits until `done` holds for the published statuses, or gives up after 10 s.
    fn wait_for(&self, what: &str, done: impl Fn(&BTreeMap<NodeId, Status>) -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if done(&self.status()) {
                return true;
            }
            thread::sleep(Duration::from_millis(2));
        }
        eprintln!("timed out waiting for {what}");
        false
    }

    /// The leader every live server follows in the accept phase.
    fn agreed_leader(&self) -> Option<NodeId> {
        let status = self.status();
        let (first, _) = status.values().next()?.leader?;
        let live = self.threads.len();
        (status.len() == live && status.values().all(|s| s.leader == Some((first, true))))
            .then_some(first)
    }

    fn stop(mut self) {
        for pid in NODES {
            self.crash(pid);
        }
    }
}

fn kv(i: u64) -> KeyValue {
    KeyValue {
        key: format!("key-{i}"),
        value: i * i,
    }
}

fn main() {
    let started = Instant::now();
    println!("Starting servers {NODES:?}, one thread each, ticking every {TICK:?}.");
    let mut cluster = Cluster::start();
    let ok = cluster.wait_for("a leader", |_| cluster.agreed_leader().is_some());
    let Some(leader) = cluster.agreed_leader().filter(|_| ok) else {
        fail(cluster)
    };
    println!(
        "[{:>5.0?}] server {leader} was elected leader",
        started.elapsed()
    );

    for i in 0..10 {
        cluster.send(NODES[i as usize % 3], Input::Append(kv(i)));
    }
    if !cluster.wait_for("10 decided entries", |s| {
        s.len() == 3 && s.values().all(|s| s.decided.len() == 10)
    }) {
        fail(cluster);
    }
    println!(
        "[{:>5.0?}] 10 entries appended on all three servers are decided everywhere:",
        started.elapsed()
    );
    for kv in &cluster.status()[&1].decided {
        print!(" {}={}", kv.key, kv.value);
    }
    println!();

    println!(
        "[{:>5.0?}] crashing the leader, server {leader}",
        started.elapsed()
    );
    cluster.crash(leader);
    if !cluster.wait_for("a new leader", |_| {
        cluster.agreed_leader().is_some_and(|l| l != leader)
    }) {
        fail(cluster);
    }
    let Some(new_leader) = cluster.agreed_leader() else {
        fail(cluster)
    };
    println!(
        "[{:>5.0?}] server {new_leader} took over",
        started.elapsed()
    );
    for i in 10..20 {
        cluster.send(new_leader, Input::Append(kv(i)));
    }
    if !cluster.wait_for("20 decided entries", |s| {
        s.values().all(|s| s.decided.len() == 20)
    }) {
        fail(cluster);
    }
    println!(
        "[{:>5.0?}] 10 more entries decided by the two remaining servers",
        started.elapsed()
    );

    println!(
        "[{:>5.0?}] restarting server {leader} from its storage",
        started.elapsed()
    );
    cluster.restart(leader);
    if !cluster.wait_for("the restarted server to catch up", |s| {
        s.len() == 3 && s.values().all(|s| s.decided.len() == 20)
    }) {
        fail(cluster);
    }
    println!(
        "[{:>5.0?}] server {leader} caught up: 20 decided entries",
        started.elapsed()
    );

    let status = cluster.status();
    let reference = &status[&1].decided;
    let same = status.values().all(|s| &s.decided == reference);
    let complete = (0..20).all(|i| reference.contains(&kv(i)));
    cluster.stop();
    if same && complete {
        println!(
            "All three servers hold the same 20 decided entries. Done in {:.0?}.",
            started.elapsed()
        );
    } else {
        eprintln!("FAILED: the servers' logs differ or miss entries");
        std::process::exit(1);
    }
}

fn fail(cluster: Cluster) -> ! {
    for (pid, status) in cluster.status() {
        eprintln!(
            "server {pid}: leader {:?}, {} decided",
            status.leader,
            status.decided.len()
        );
    }
    cluster.stop();
    std::process::exit(1);
}
