//! Concurrent clients over HTTP while a node is killed and restarted: every operation's
//! invocation and response is recorded and the history must be linearizable, per key.

use kv_store::client::{key_path, request};
use kv_store::demo::Demo;
use kv_store::history::{check, Event, Op};
use omnipaxos::simulation::SimRng;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CLIENTS: u64 = 3;
const OPS_PER_CLIENT: usize = 60;
const KEYS: u64 = 4;

#[test]
fn histories_with_a_crash_are_linearizable() {
    history_with_a_crash_is_linearizable(None);
}

#[test]
fn histories_with_a_crash_are_linearizable_with_leader_leases() {
    history_with_a_crash_is_linearizable(Some(100));
}

fn history_with_a_crash_is_linearizable(read_lease_ticks: Option<u64>) {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_kv_store"));
    let mut cluster = Demo::start_with_lease(exe, read_lease_ticks).unwrap();
    cluster.wait_for("a leader", |d| d.leader()).unwrap();
    let addrs = cluster.http.clone();
    let events = Arc::new(Mutex::new(Vec::new()));
    let epoch = Instant::now();
    let now = move || epoch.elapsed().as_micros() as u64;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let addrs = addrs.clone();
            let events = events.clone();
            std::thread::spawn(move || {
                let mut rng = SimRng::new(c);
                for n in 0..OPS_PER_CLIENT {
                    let key = format!("k{}", rng.range(0, KEYS - 1));
                    let pid = rng.range(1, 3);
                    let addr = addrs[&pid];
                    let invoked = now();
                    let event = if rng.chance(0.5) {
                        let value = format!("c{c}-{n}");
                        let r = request(
                            addr,
                            "PUT",
                            &key_path(&key),
                            &value,
                            Duration::from_secs(12),
                        );
                        let ok = matches!(&r, Ok(r) if r.status == 200);
                        Event {
                            key,
                            op: Op::Write {
                                value,
                                acknowledged: ok,
                            },
                            invoked,
                            responded: ok.then(now),
                        }
                    } else {
                        match request(addr, "GET", &key_path(&key), "", Duration::from_secs(12)) {
                            Ok(r) if r.status == 200 => Event {
                                key,
                                op: Op::Read {
                                    value: r.body["value"].as_str().map(String::from),
                                },
                                invoked,
                                responded: Some(now()),
                            },
                            Ok(r) if r.status == 404 => Event {
                                key,
                                op: Op::Read { value: None },
                                invoked,
                                responded: Some(now()),
                            },
                            _ => continue, // a failed read tells nothing
                        }
                    };
                    events.lock().unwrap().push(event);
                }
            })
        })
        .collect();
    // Kill and restart a node while the clients run.
    std::thread::sleep(Duration::from_millis(30));
    let victim = cluster.leader().unwrap_or(2);
    cluster.kill(victim);
    std::thread::sleep(Duration::from_millis(300));
    cluster.spawn(victim).unwrap();
    for c in clients {
        c.join().unwrap();
    }
    let events = events.lock().unwrap();
    assert!(
        events.len() > (CLIENTS as usize * OPS_PER_CLIENT) / 2,
        "most operations completed"
    );
    check(&events).unwrap();
}
