//! `OmniPaxosConfig::with_toml` in the published format: every field read, defaults for the
//! missing ones, unknown keys ignored, and typed errors for a missing file, bad TOML and an
//! invalid configuration.

use omnipaxos::errors::ConfigError;
use omnipaxos::util::FlexibleQuorum;
use omnipaxos::OmniPaxosConfig;

fn path(name: &str) -> String {
    format!("{}/tests/config/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn reads_every_field_of_the_published_example() {
    let config = OmniPaxosConfig::with_toml(&path("node1.toml")).expect("valid config");
    let cluster = &config.cluster_config;
    assert_eq!(cluster.configuration_id, 1);
    assert_eq!(cluster.nodes, vec![1, 2, 3, 4, 5]);
    assert_eq!(
        cluster.flexible_quorum,
        Some(FlexibleQuorum {
            read_quorum_size: 4,
            write_quorum_size: 2
        })
    );
    let server = &config.server_config;
    assert_eq!(server.pid, 1);
    assert_eq!(server.election_tick_timeout, 10);
    assert_eq!(server.resend_message_tick_timeout, 100);
    assert_eq!(server.flush_batch_tick_timeout, 200);
    assert_eq!(server.buffer_size, 10000);
    assert_eq!(server.batch_size, 2);
    assert_eq!(server.leader_priority, 2);
}

#[test]
fn missing_keys_take_their_defaults() {
    let dir = std::env::temp_dir().join(format!("omnipaxos-toml-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("node2.toml");
    std::fs::write(
        &file,
        "[cluster_config]\nconfiguration_id = 1\nnodes = [1, 2, 3]\n\n[server_config]\npid = 2\n",
    )
    .unwrap();
    let config = OmniPaxosConfig::with_toml(file.to_str().unwrap()).unwrap();
    assert_eq!(config.server_config.pid, 2);
    assert_eq!(config.server_config.election_tick_timeout, 1);
    assert_eq!(config.server_config.batch_size, 1);
    assert_eq!(config.cluster_config.flexible_quorum, None);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn errors_are_typed() {
    assert!(matches!(
        OmniPaxosConfig::with_toml(&path("does_not_exist.toml")),
        Err(ConfigError::ReadFile(_))
    ));
    assert!(matches!(
        OmniPaxosConfig::with_toml(&path("../config_toml.rs")),
        Err(ConfigError::Parse(_))
    ));
    match OmniPaxosConfig::with_toml(&path("bad_quorum.toml")) {
        Err(err @ ConfigError::InvalidConfig(_)) => {
            assert!(err.to_string().starts_with("Invalid config: "), "{err}")
        }
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
}
