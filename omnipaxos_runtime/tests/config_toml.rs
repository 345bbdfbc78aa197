//! A node's configuration in the guide's TOML: the core's tables plus `[runtime]`.

use omnipaxos_runtime::config::{DEFAULT_ELECTION_TICKS, DEFAULT_RESEND_TICKS};
use omnipaxos_runtime::NodeConfig;
use std::time::Duration;

const NODE: &str = r#"
[cluster_config]
configuration_id = 1
nodes = [1, 2, 3]

[server_config]
pid = 1

[runtime]
tick_period_ms = 20
listen = "127.0.0.1:7001"
peers = { 2 = "127.0.0.1:7002", 3 = "localhost:7003" }
"#;

#[test]
fn a_node_file_gives_every_part_and_the_runtimes_timing_defaults() {
    let config = NodeConfig::from_toml(NODE).expect("valid");
    assert_eq!(config.omnipaxos.server_config.pid, 1);
    assert_eq!(config.omnipaxos.cluster_config.nodes, vec![1, 2, 3]);
    assert_eq!(config.runtime.tick_period, Duration::from_millis(20));
    assert_eq!(config.network.listen.port(), 7001);
    assert_eq!(config.network.peers[&3], "localhost:7003");
    // Left out of the file: the runtime's rounds, not the core's one-tick round.
    let server = &config.omnipaxos.server_config;
    assert_eq!(server.election_tick_timeout, DEFAULT_ELECTION_TICKS);
    assert_eq!(server.resend_message_tick_timeout, DEFAULT_RESEND_TICKS);
    assert!(config.network.tls.is_none());
}

#[test]
fn values_set_in_the_file_win_over_the_runtimes_defaults() {
    let text = NODE.replace("pid = 1", "pid = 1\nelection_tick_timeout = 7");
    let config = NodeConfig::from_toml(&text).expect("valid");
    assert_eq!(config.omnipaxos.server_config.election_tick_timeout, 7);
    let text = NODE.replace(
        "tick_period_ms = 20",
        "max_frame_bytes = 65536\nmax_message_bytes = 1048576",
    );
    let network = NodeConfig::from_toml(&text).expect("valid").network;
    assert_eq!(
        (network.max_frame_bytes, network.max_message_bytes),
        (65536, 1 << 20)
    );
}

#[test]
fn bad_files_are_typed_errors_that_say_what_is_wrong() {
    let cases = [
        (NODE.replace("[runtime]\n", "[other]\n"), "[runtime]"),
        (
            NODE.replace("tick_period_ms = 20", "tick_period_ms = 0"),
            "tick_period_ms",
        ),
        (
            NODE.replace("127.0.0.1:7001", "not an address"),
            "[runtime]",
        ),
        (
            NODE.replace("2 = \"127.0.0.1:7002\"", "x = \"127.0.0.1:7002\""),
            "not a pid",
        ),
        (
            NODE.replace("2 = \"127.0.0.1:7002\"", "1 = \"127.0.0.1:7002\""),
            "this node",
        ),
        (
            NODE.replace("tick_period_ms = 20", "tick_period_ms = 20\nspeed = 3"),
            "speed",
        ),
        (NODE.replace("pid = 1", "pid = 9"), "pid"),
        (
            NODE.replace("tick_period_ms = 20", "max_frame_bytes = 10"),
            "max_frame_bytes",
        ),
        (
            NODE.replace("tick_period_ms = 20", "max_message_bytes = 1000"),
            "max_message_bytes",
        ),
        (
            NODE.replace("tick_period_ms = 20", "max_message_bytes = 2147483648"),
            "max_message_bytes",
        ),
    ];
    for (text, expected) in cases {
        let err = NodeConfig::from_toml(&text)
            .expect_err(expected)
            .to_string();
        assert!(
            err.contains(expected),
            "{err:?} should mention {expected:?}"
        );
    }
}
