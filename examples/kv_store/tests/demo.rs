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

/// `demo --keep`: after its script the cluster keeps running, every printed dashboard answers,
/// and Ctrl-C (SIGINT to the demo) stops every node.
#[test]
fn the_kept_demo_serves_its_dashboards_until_ctrl_c() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let mut demo = Command::new(env!("CARGO_BIN_EXE_kv_store"))
        .args(["demo", "--keys", "30", "--keep"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    let mut dashboards = Vec::new();
    let mut ca = None;
    let mut token = None;
    for line in lines.by_ref() {
        let line = line.expect("the demo's output");
        for word in line.split_whitespace() {
            // `https://ADDR/#token=TOKEN`: a dashboard, with root's token in the fragment.
            if let Some((addr, t)) = word
                .strip_prefix("https://")
                .and_then(|rest| rest.split_once("/#token="))
            {
                dashboards.push(addr.to_string());
                token = Some(t.to_string());
            }
            if word.ends_with("ca.pem") {
                ca = Some(std::path::PathBuf::from(word));
            }
        }
        if line.contains("Press Ctrl-C") {
            break;
        }
    }
    assert_eq!(
        dashboards.len(),
        3,
        "one dashboard per live node: {dashboards:?}"
    );
    let client = kv_store::client::Client::https(&ca.expect("the CA's path"), None)
        .unwrap()
        .with_token(token.expect("a token"));
    let timeout = std::time::Duration::from_secs(10);
    for addr in &dashboards {
        let addr = addr.parse().expect("an address");
        let page = client
            .request(addr, "GET", "/", "", timeout)
            .expect("GET /");
        assert_eq!(page.status, 200);
        assert!(page
            .body
            .as_str()
            .is_some_and(|html| html.contains("kv_store cluster")));
        // The printed token is root's: it reads the cluster's status.
        let status = client.request(addr, "GET", "/status", "", timeout).unwrap();
        assert_eq!(status.status, 200, "{}", status.body);
    }
    let interrupted = Command::new("kill")
        .args(["-INT", &demo.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(demo.wait().unwrap().success(), "{rest:?}");
    assert!(
        rest.iter().any(|l| l.contains("stopping the nodes")),
        "{rest:?}"
    );
    for addr in &dashboards {
        let addr = addr.parse().expect("an address");
        assert!(
            client.request(addr, "GET", "/status", "", timeout).is_err(),
            "node at {addr} still answers after Ctrl-C"
        );
    }
}
