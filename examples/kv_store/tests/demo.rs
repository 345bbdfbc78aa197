//! The README's demo, as a process: three nodes, a SIGKILLed leader, a restart, node 3 replaced
//! by node 4 through a reconfiguration, every acknowledged write checked on every node; it must
//! exit 0 and leave no node process behind.

use std::process::Command;

#[test]
fn the_demo_passes_its_own_checks_and_cleans_up() {
    let out = Command::new(env!("CARGO_BIN_EXE_kv_store"))
        .args(["demo", "--keys", "60"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("node 3 replaced by node 4; nothing lost"),
        "{stdout}"
    );
    for pid in [1, 2, 4] {
        assert!(
            stdout.contains(&format!("node {pid}: all 180 keys present")),
            "{stdout}"
        );
    }
}
