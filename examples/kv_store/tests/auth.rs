//! Clients with credentials, on three kv_store processes with HTTPS and mutual TLS between the
//! nodes: who may do what, changes decided through the log and in force on every node at once,
//! and the auth state surviving restarts and a state transfer to a joining node.

use kv_store::client::{key_path, Client};
use kv_store::demo::Demo;
use serde_json::json;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

const T: Duration = Duration::from_secs(12);

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kv_store"))
}

/// HTTPS trusting the cluster's CA, with no credentials.
fn anonymous(cluster: &Demo) -> Client {
    Client::https(&cluster.dir().join("certs").join("ca.pem"), None).unwrap()
}

/// A token for `user` from node `pid`.
fn token(cluster: &Demo, pid: u64, user: &str, password: &str) -> Result<String, String> {
    let body = json!({ "user": user, "password": password }).to_string();
    let r = anonymous(cluster)
        .request(cluster.http[&pid], "POST", "/auth/token", &body, T)
        .map_err(|e| e.to_string())?;
    match r.body["token"].as_str() {
        Some(t) if r.status == 200 => Ok(t.to_string()),
        _ => Err(format!("{} {}", r.status, r.body)),
    }
}

/// The status of `method path` with `body` through `client` at node `pid`.
fn status(client: &Client, cluster: &Demo, pid: u64, method: &str, path: &str, body: &str) -> u16 {
    client
        .request(cluster.http[&pid], method, path, body, T)
        .map(|r| r.status)
        .unwrap_or(0)
}

/// An admin change through node `pid` (as root, by its client certificate); must succeed.
fn admin(cluster: &Demo, pid: u64, method: &str, path: &str, body: serde_json::Value) {
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let r = cluster
        .client
        .request(cluster.http[&pid], method, path, &body, T)
        .unwrap();
    assert_eq!(r.status, 200, "{method} {path}: {}", r.body);
}

#[test]
fn without_credentials_only_health_the_login_page_and_tokens_answer() {
    let cluster = Demo::start(exe()).unwrap();
    cluster.wait_for("a leader", |d| d.leader()).unwrap();
    let nobody = anonymous(&cluster);
    let addr: SocketAddr = cluster.http[&1];
    for (method, path, body) in [
        ("GET", "/kv/a", ""),
        ("PUT", "/kv/a", "v"),
        ("DELETE", "/kv/a", ""),
        ("GET", "/status", ""),
        ("GET", "/cluster", ""),
        ("GET", "/history", ""),
        ("GET", "/metrics", ""),
        ("GET", "/handover", ""),
        (
            "POST",
            "/reconfigure",
            r#"{"configuration_id": 2, "nodes": [1]}"#,
        ),
        ("POST", "/state/chunk", "{}"),
        ("GET", "/auth/users", ""),
        ("PUT", "/auth/users/mallory", r#"{"password": "x"}"#),
        ("DELETE", "/auth/users/root", ""),
        ("PUT", "/auth/roles/all", r#"{"write": [""]}"#),
        ("PUT", "/auth/users/mallory/roles/admin", ""),
        ("GET", "/nothing/here", ""),
    ] {
        let r = nobody.request(addr, method, path, body, T).unwrap();
        assert_eq!(r.status, 401, "{method} {path}: {}", r.body);
        assert!(r.body["error"].is_string(), "{method} {path}: {}", r.body);
    }
    // A token that is not one, or signed by someone else, is no credential either.
    let forged = nobody.clone().with_token("v1.eyJ1Ijoicm9vdCJ9.AAAA");
    assert_eq!(status(&forged, &cluster, 1, "GET", "/status", ""), 401);
    assert_eq!(status(&nobody, &cluster, 1, "GET", "/health", ""), 200);
    assert_eq!(status(&nobody, &cluster, 1, "GET", "/", ""), 200);
    assert!(token(&cluster, 1, "root", "wrong").is_err());
    assert!(token(&cluster, 1, "root", &cluster.root_password).is_ok());
}

#[test]
fn grants_changes_and_revocations_hold_on_every_node_at_once() {
    let cluster = Demo::start(exe()).unwrap();
    cluster.wait_for("a leader", |d| d.leader()).unwrap();
    // Roles and a user, through node 1.
    admin(
        &cluster,
        1,
        "PUT",
        "/auth/roles/reader",
        json!({ "read": ["app/"] }),
    );
    admin(
        &cluster,
        1,
        "PUT",
        "/auth/roles/logger",
        json!({ "write": ["app/logs/"] }),
    );
    admin(
        &cluster,
        1,
        "PUT",
        "/auth/users/alice",
        json!({ "password": "alice-pw" }),
    );
    admin(
        &cluster,
        1,
        "PUT",
        "/auth/users/alice/roles/reader",
        json!(null),
    );
    // A user created through node 1 gets a token from node 3 at once.
    let alice = anonymous(&cluster).with_token(token(&cluster, 3, "alice", "alice-pw").unwrap());
    assert!(token(&cluster, 3, "alice", "not-her-password").is_err());
    // A reader reads its prefix and nothing else, and writes nothing.
    admin(&cluster, 2, "PUT", &key_path("app/x"), json!("hello"));
    for pid in [1, 2, 3] {
        assert_eq!(
            status(&alice, &cluster, pid, "GET", &key_path("app/x"), ""),
            200
        );
        assert_eq!(
            status(&alice, &cluster, pid, "GET", &key_path("secret"), ""),
            403
        );
        assert_eq!(
            status(&alice, &cluster, pid, "PUT", &key_path("app/x"), "no"),
            403
        );
        assert_eq!(status(&alice, &cluster, pid, "GET", "/status", ""), 200);
        assert_eq!(status(&alice, &cluster, pid, "GET", "/auth/users", ""), 403);
        assert_eq!(
            status(
                &alice,
                &cluster,
                pid,
                "PUT",
                "/auth/users/alice/roles/admin",
                ""
            ),
            403
        );
    }
    // A write grant on a prefix lets through exactly that prefix.
    admin(
        &cluster,
        2,
        "PUT",
        "/auth/users/alice/roles/logger",
        json!(null),
    );
    for pid in [1, 2, 3] {
        let log = key_path(&format!("app/logs/{pid}"));
        assert_eq!(status(&alice, &cluster, pid, "PUT", &log, "line"), 200);
        assert_eq!(
            status(&alice, &cluster, pid, "PUT", &key_path("app/other"), "x"),
            403
        );
        assert_eq!(
            status(&alice, &cluster, pid, "DELETE", &key_path("app/x"), ""),
            403
        );
    }
    // Revoked through node 2: the next request is refused at every node.
    admin(
        &cluster,
        2,
        "DELETE",
        "/auth/users/alice/roles/logger",
        json!(null),
    );
    for pid in [1, 3, 2] {
        assert_eq!(
            status(&alice, &cluster, pid, "PUT", &key_path("app/logs/9"), "x"),
            403
        );
    }
    admin(
        &cluster,
        2,
        "DELETE",
        "/auth/users/alice/roles/reader",
        json!(null),
    );
    for pid in [3, 1, 2] {
        assert_eq!(
            status(&alice, &cluster, pid, "GET", &key_path("app/x"), ""),
            403
        );
    }
    // A new password ends the old tokens; a deleted user has none that work.
    admin(
        &cluster,
        3,
        "PUT",
        "/auth/users/alice",
        json!({ "password": "new-pw" }),
    );
    // (A key read is checked at its read point, so node 1 applied the change first; status
    // pages are served without one, so that they answer without a quorum.)
    assert_eq!(
        status(&alice, &cluster, 1, "GET", &key_path("app/x"), ""),
        401
    );
    admin(&cluster, 3, "DELETE", "/auth/users/alice", json!(null));
    assert!(token(&cluster, 1, "alice", "new-pw").is_err());
    // Only nodes take part in state transfers: a user's certificate is refused.
    let chunk = json!({ "min": [1, 0], "after": null, "max_bytes": 4096, "with_sessions": true });
    let r = cluster
        .client
        .request(
            cluster.http[&1],
            "POST",
            "/state/chunk",
            &chunk.to_string(),
            T,
        )
        .unwrap();
    assert_eq!(r.status, 403, "{}", r.body);
}

#[test]
fn users_survive_restarts_and_reach_a_joining_node_through_a_state_transfer() {
    let mut cluster = Demo::start_with_chunks(exe(), 64 * 1024).unwrap();
    cluster.wait_for("a leader", |d| d.leader()).unwrap();
    admin(
        &cluster,
        1,
        "PUT",
        "/auth/roles/reader",
        json!({ "read": [""] }),
    );
    admin(
        &cluster,
        2,
        "PUT",
        "/auth/users/bob",
        json!({ "password": "bob-pw" }),
    );
    admin(
        &cluster,
        3,
        "PUT",
        "/auth/users/bob/roles/reader",
        json!(null),
    );
    // Enough data for a checkpoint (every 2 MiB): the log is compacted past the auth changes,
    // so a node that joins gets them only through a state transfer.
    let value = "v".repeat(100_000);
    for i in 0..30 {
        let r = cluster
            .client
            .request(
                cluster.http[&1],
                "PUT",
                &key_path(&format!("big-{i}")),
                &value,
                T,
            )
            .unwrap();
        assert_eq!(r.status, 200);
    }
    cluster
        .wait_for("a checkpoint on node 1 and 2", |d| {
            [1, 2]
                .iter()
                .all(|p| {
                    d.status(*p)
                        .is_some_and(|s| s["compacted_idx"].as_u64() > Some(0))
                })
                .then_some(())
        })
        .unwrap();
    // Every node restarts: bob is still there.
    for pid in [1, 2, 3] {
        cluster.kill(pid);
    }
    for pid in [1, 2, 3] {
        cluster.spawn(pid).unwrap();
    }
    cluster.wait_for("a leader", |d| d.leader()).unwrap();
    let bob = anonymous(&cluster).with_token(token(&cluster, 3, "bob", "bob-pw").unwrap());
    assert_eq!(
        status(&bob, &cluster, 2, "GET", &key_path("big-1"), ""),
        200
    );
    // Node 4 joins (node 3 leaves): it copies the state from the others, bob with it.
    cluster.replace_node_3().unwrap();
    let four = cluster.status(4).unwrap();
    assert!(four["state"]["transfers"].as_u64() >= Some(1), "{four}");
    let bob4 = anonymous(&cluster).with_token(token(&cluster, 4, "bob", "bob-pw").unwrap());
    assert_eq!(
        status(&bob4, &cluster, 4, "GET", &key_path("big-2"), ""),
        200
    );
    assert_eq!(
        status(&bob4, &cluster, 4, "PUT", &key_path("big-2"), "x"),
        403
    );
}
