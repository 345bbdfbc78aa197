//! Linearizability under crashes: sixteen concurrent clients mix PUT, GET and DELETE on a few
//! keys through all three nodes while the leader is SIGKILLed and restarted, twice; with the read
//! index and with leader leases. Every invocation and answer is recorded;
//! at the end every key is read from every node and added to the history, which must be
//! linearizable: so no acknowledged write is missing on any node, none applied twice, and no read
//! saw a value it could not have.
//!
//! The faults are placed by progress, not by time: each waits until the clients completed a
//! number of operations, and every wait is for a condition.

use kv_store::client::{key_path, Client, Response};
use kv_store::demo::Demo;
use kv_store::history::{check, Event, Op};
use omnipaxos::simulation::SimRng;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CLIENTS: u64 = 16;
/// At most this many operations per client; clients stop earlier once the faults are over.
const MAX_OPS_PER_CLIENT: usize = 50;
const KEYS: u64 = 10;
/// Completed operations (over all clients) after which each fault happens.
const KILL_AT: [usize; 2] = [30, 110];
/// Operations completed under each new leader before the killed one restarts, and after the
/// last restart before the clients stop.
const OPS_BETWEEN: usize = 20;

type History = Arc<Mutex<Vec<Event>>>;

/// Sends one request, to `addrs[first]` or, while a node refuses connections (it is down, so
/// the request never reached it), to the next one. Also says which node (1, 2 or 3) it went to.
fn send(
    client: &Client,
    addrs: &[SocketAddr],
    first: usize,
    method: &str,
    path: &str,
    body: &str,
) -> (std::io::Result<Response>, u64) {
    let mut result = Err(std::io::ErrorKind::ConnectionRefused.into());
    let mut node = 0;
    for k in 0..addrs.len() {
        let at = (first + k) % addrs.len();
        node = at as u64 + 1;
        result = client.request(addrs[at], method, path, body, Duration::from_secs(12));
        if !matches!(&result, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused) {
            break;
        }
    }
    (result, node)
}

/// One client operation, through node `addrs[first]` (or the next live one); `None` for a read
/// that failed (it tells nothing).
fn operate(
    client: &Client,
    addrs: &[SocketAddr],
    first: usize,
    key: String,
    choice: u64,
    value: String,
    now: impl Fn() -> u64,
) -> Option<Event> {
    let invoked = now();
    let path = key_path(&key);
    let (op, responded, node) = match choice {
        0 => {
            let (r, node) = send(client, addrs, first, "PUT", &path, &value);
            let ok = matches!(&r, Ok(r) if r.status == 200);
            let op = Op::Write {
                value,
                acknowledged: ok,
            };
            (op, ok.then(&now), node)
        }
        1 => {
            let (r, node) = send(client, addrs, first, "DELETE", &path, "");
            let existed = match r {
                Ok(r) if r.status == 200 => Some(true),
                Ok(r) if r.status == 404 => Some(false),
                _ => None,
            };
            (Op::Delete { existed }, existed.map(|_| now()), node)
        }
        _ => match send(client, addrs, first, "GET", &path, "") {
            (Ok(r), node) if r.status == 200 => {
                let value = r.body["value"].as_str().map(String::from);
                (Op::Read { value }, Some(now()), node)
            }
            (Ok(r), node) if r.status == 404 => (Op::Read { value: None }, Some(now()), node),
            _ => return None,
        },
    };
    Some(Event {
        key,
        op,
        invoked,
        responded,
        node,
    })
}

#[test]
fn sixteen_clients_stay_linearizable_while_the_leader_is_killed_and_restarted_twice() {
    leader_killed_and_restarted_twice(None);
}

#[test]
fn the_same_with_leader_leases_for_reads() {
    leader_killed_and_restarted_twice(Some(100));
}

fn leader_killed_and_restarted_twice(read_lease_ticks: Option<u64>) {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_kv_store"));
    let mut cluster = Demo::start_with_lease(exe, read_lease_ticks).unwrap();
    cluster.wait_for("a leader", |d| d.leader()).unwrap();
    let addrs = cluster.http.clone();
    let history: History = Arc::default();
    let completed = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let epoch = Instant::now();
    let now = move || epoch.elapsed().as_micros() as u64;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let addrs: Vec<SocketAddr> = [1, 2, 3].iter().map(|p| addrs[p]).collect();
            let client = cluster.client.clone();
            let history = history.clone();
            let (completed, stop) = (completed.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut rng = SimRng::new(1000 + c);
                for n in 0..MAX_OPS_PER_CLIENT {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let key = format!("k{}", rng.range(0, KEYS - 1));
                    let first = rng.range(0, 2) as usize;
                    // Half writes, a sixth deletes, a third reads.
                    let choice = match rng.range(0, 5) {
                        0..=2 => 0,
                        3 => 1,
                        _ => 2,
                    };
                    if let Some(e) = operate(
                        &client,
                        &addrs,
                        first,
                        key,
                        choice,
                        format!("c{c}-{n}"),
                        now,
                    ) {
                        history.lock().unwrap().push(e);
                    }
                    completed.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();

    let progress = |cluster: &Demo, at: usize| {
        cluster
            .wait_for(&format!("{at} completed operations"), |_| {
                (completed.load(Ordering::SeqCst) >= at).then_some(())
            })
            .unwrap_or_else(|e| {
                let statuses: Vec<_> = [1, 2, 3].iter().map(|p| cluster.status(*p)).collect();
                panic!("{e}: statuses {statuses:#?}")
            })
    };
    let mut killed = Vec::new();
    let mut faults = Vec::new();
    for at in KILL_AT {
        progress(&cluster, at);
        let leader = cluster.wait_for("a leader", |d| d.leader()).unwrap();
        cluster.kill(leader);
        faults.push(format!(
            "killed {leader} at {}",
            epoch.elapsed().as_micros()
        ));
        killed.push(leader);
        cluster
            .wait_for("a new leader", |d| d.leader().filter(|l| *l != leader))
            .unwrap();
        progress(&cluster, completed.load(Ordering::SeqCst) + OPS_BETWEEN);
        cluster.spawn(leader).unwrap();
        faults.push(format!(
            "restarted {leader} at {}",
            epoch.elapsed().as_micros()
        ));
        cluster
            .wait_for("every node back and agreeing on a leader", |d| d.leader())
            .unwrap();
    }
    // Some more under the last leader, unless the clients are done already.
    let budget = CLIENTS as usize * MAX_OPS_PER_CLIENT;
    progress(
        &cluster,
        (completed.load(Ordering::SeqCst) + OPS_BETWEEN).min(budget),
    );
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    assert_eq!(killed.len(), 2);

    // Every key read from every node, after everything: an acknowledged write missing on any
    // node would make these reads non-linearizable.
    let mut events = history.lock().unwrap().clone();
    let answered = events.iter().filter(|e| e.responded.is_some()).count();
    eprintln!(
        "{} operations, {answered} answered, leaders killed: {killed:?}",
        events.len()
    );
    assert!(
        answered > KILL_AT[1],
        "most operations got an answer: {answered} of {}",
        events.len()
    );
    for pid in [1, 2, 3] {
        for k in 0..KEYS {
            let key = format!("k{k}");
            let e = operate(
                &cluster.client,
                &[addrs[&pid]],
                0,
                key.clone(),
                2,
                String::new(),
                now,
            )
            .unwrap_or_else(|| panic!("node {pid} answers a read of {key}"));
            events.push(e);
        }
    }
    if let Err(e) = check(&events) {
        // Keep the nodes' logs and data for whoever looks into it.
        let kept = cluster.keep_files();
        panic!(
            "{e}\nthe nodes' files and logs: {}\nfaults (time in us since start): {faults:?}",
            kept.display()
        );
    }
}
