//! A leader's death costs one leader change, on real processes: three times in a row the
//! leader is SIGKILLed, the survivors elect one new leader (each sees exactly one change while
//! writes go on through it), and the killed node comes back as a follower. Survivors notice a
//! death apart; before the fix the first to stand elected itself and the next replaced it, two
//! changes for nearly every death (7 of 8 on an idle machine).

use kv_store::demo::Demo;
use std::path::PathBuf;

#[test]
fn each_leader_death_costs_one_leader_change() {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_kv_store"));
    let mut cluster = Demo::start(exe).unwrap();
    let mut written = 0;
    for death in 0..3 {
        let leader = cluster.wait_for("a leader", |d| d.leader()).unwrap();
        cluster.write_keys("before", written, 20).unwrap();
        written += 20;
        let survivors: Vec<u64> = cluster
            .live()
            .into_iter()
            .filter(|p| *p != leader)
            .collect();
        let before = cluster.leader_changes(&survivors).unwrap();
        cluster.kill(leader);
        let next = cluster
            .wait_for("a new leader", |d| d.leader().filter(|l| *l != leader))
            .unwrap();
        // Writes through the new leader: a second change would come within its first rounds.
        cluster.write_keys("after", written, 50).unwrap();
        written += 50;
        let after = cluster.leader_changes(&survivors).unwrap();
        for ((pid, b), a) in survivors.iter().zip(&before).zip(&after) {
            assert_eq!(
                *a,
                b + 1,
                "death {death} of node {leader} ({next} took over): node {pid} saw {} changes",
                a - b
            );
        }
        cluster.spawn(leader).unwrap();
        cluster
            .wait_for("the killed node follows", |d| {
                d.status(leader)
                    .filter(|s| s["leader"].as_u64() == Some(next))
            })
            .unwrap();
    }
    for pid in cluster.live() {
        cluster.verify_on(pid).unwrap();
    }
}
