mod common;
use common::*;

#[test]
fn three_nodes_elect_and_decide() {
    let mut sim = cluster(3, 1);
    let leader = elect(&mut sim, 50);
    assert_eq!(leader, 3, "highest pid wins at start-up");
    for i in 0..10 {
        sim.append(1 + (i % 3), 100 + i).unwrap();
    }
    decide_all(&mut sim, 10, 100);
    for pid in 1..=3 {
        let mut got = decided_values(&sim, pid);
        got.sort();
        assert_eq!(got, (100..110).collect::<Vec<_>>());
    }
}
