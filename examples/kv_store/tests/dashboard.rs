//! The dashboard in a real browser: headless Chromium loads `GET /` of a running three-process
//! cluster and runs its script; the rendered page must show the three nodes and the leader,
//! and after the link between nodes 1 and 2 is cut (both directions, through proxies), the
//! connectivity matrix must show exactly that link as cut.
//!
//! Needs Chromium (Debian: `apt-get install chromium`; `.ci/run` installs it). Set `CHROMIUM`
//! to use another binary.

mod support;

use kv_store::demo::Demo;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::link::Link;

/// Attempts at rendering a page whose data may still be settling (each one a fresh browser).
const RENDERS: usize = 10;
/// A browser that has not finished by then is stuck (it is killed, and the test fails).
const BROWSER_PATIENCE: Duration = Duration::from_secs(120);

fn chromium() -> String {
    if let Ok(path) = std::env::var("CHROMIUM") {
        return path;
    }
    for candidate in ["chromium", "chromium-browser", "google-chrome"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {candidate}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if found {
            return candidate.to_string();
        }
    }
    panic!("this test needs Chromium: apt-get install chromium (or set CHROMIUM=/path/to/it)");
}

/// Runs headless Chromium on `url` with `action` (`--dump-dom` or `--screenshot=...`) after
/// the page's script ran for a few seconds of the browser's virtual time.
fn browse(url: &str, action: &str) -> String {
    let profile = tempfile::tempdir().expect("a profile directory");
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--window-size=1400,1000",
            // The cluster's own CA is not in the browser's store.
            "--ignore-certificate-errors",
            "--virtual-time-budget=4000",
            action,
            url,
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("Chromium starts");
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut out);
        out
    });
    let started = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if started.elapsed() > BROWSER_PATIENCE {
            let _ = child.kill();
            panic!("Chromium did not finish with {url} within {BROWSER_PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    reader.join().expect("reader")
}

/// Renders the page until `check` accepts the DOM; returns the last DOM and the verdict.
fn render_until(url: &str, check: impl Fn(&str) -> Result<(), String>) -> String {
    let mut verdict = Err("not rendered".to_string());
    for _ in 0..RENDERS {
        let dom = browse(url, "--dump-dom");
        verdict = check(&dom);
        if verdict.is_ok() {
            return dom;
        }
    }
    panic!("the page never showed what was expected: {verdict:?}");
}

/// The state the matrix shows for the link `from` -> `to`.
fn link_state(dom: &str, from: u64, to: u64) -> Option<String> {
    let marker = format!("data-from=\"{from}\" data-to=\"{to}\" data-state=\"");
    let start = dom.find(&marker)? + marker.len();
    let end = dom[start..].find('"')?;
    Some(dom[start..start + end].to_string())
}

/// The role the nodes table shows for `pid`.
fn role(dom: &str, pid: u64) -> Option<String> {
    let marker = format!("<tr data-pid=\"{pid}\" data-role=\"");
    let start = dom.find(&marker)? + marker.len();
    let end = dom[start..].find('"')?;
    Some(dom[start..start + end].to_string())
}

/// Whether `pid`'s transport is connected to `peer`, by its `/status`.
fn connected(cluster: &Demo, pid: u64, peer: u64) -> bool {
    cluster
        .status(pid)
        .is_some_and(|s| s["peers"][peer.to_string()]["connected"] == true)
}

#[test]
fn the_dashboard_shows_the_nodes_the_leader_and_a_cut_link() {
    // Nodes 1 and 2 reach each other through links the test can cut.
    let mut links: BTreeMap<(u64, u64), Link> = BTreeMap::new();
    let route = |from: u64, to: u64, addr: SocketAddr| -> Result<SocketAddr, String> {
        if (from, to) == (1, 2) || (from, to) == (2, 1) {
            let link = Link::start(addr).map_err(|e| e.to_string())?;
            let via = link.addr;
            links.insert((from, to), link);
            Ok(via)
        } else {
            Ok(addr)
        }
    };
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_kv_store"));
    let mut cluster = Demo::start_routed(exe, None, route).unwrap();
    cluster.wait_for("a leader", |d| d.leader()).unwrap();
    cluster.write_keys("dashboard", 0, 30).unwrap();
    // Without a token the page asks to sign in, and shows nothing of the cluster.
    let anonymous = format!("https://{}/", cluster.http[&3]);
    render_until(&anonymous, |dom| {
        if !dom.contains("data-login=\"true\"") {
            return Err("no login form shown".into());
        }
        if dom.contains("data-loaded") || dom.contains("data-pid=") {
            return Err("cluster data shown without a token".into());
        }
        Ok(())
    });
    // With root's token (in the link's fragment, as the demo prints it) it shows the cluster.
    let token = cluster.root_token().unwrap();
    let url = format!("https://{}/#token={token}", cluster.http[&3]);

    // The page must name the leader the nodes agree on (asked again for every rendering, in
    // case an election happened in between).
    let dom = render_until(&url, |dom| {
        let leader = cluster
            .leader()
            .ok_or("the nodes do not agree on a leader")?;
        for pid in [1, 2, 3] {
            let expected = if pid == leader { "leader" } else { "follower" };
            let shown = role(dom, pid);
            if shown.as_deref() != Some(expected) {
                return Err(format!("node {pid} shown as {shown:?}, not {expected}"));
            }
        }
        if !dom.contains(&format!("data-leader=\"{leader}\"")) {
            return Err(format!(
                "the header does not name node {leader} as the leader"
            ));
        }
        Ok(())
    });
    assert!(dom.contains("id=\"chart-throughput\"") && dom.contains("<path"));
    for (from, to) in [(1, 2), (2, 1), (1, 3), (3, 1), (2, 3), (3, 2)] {
        assert_ne!(link_state(&dom, from, to).as_deref(), Some("cut"));
    }

    for link in links.values() {
        link.cut();
    }
    cluster
        .wait_for("nodes 1 and 2 to see their link down", |d| {
            (!connected(d, 1, 2) && !connected(d, 2, 1)).then_some(())
        })
        .unwrap();
    render_until(&url, |dom| {
        for (from, to) in [(1, 2), (2, 1), (1, 3), (3, 1), (2, 3), (3, 2)] {
            let cut = (from, to) == (1, 2) || (from, to) == (2, 1);
            let shown = link_state(dom, from, to);
            if (shown.as_deref() == Some("cut")) != cut || shown.is_none() {
                return Err(format!("link {from} -> {to} shown as {shown:?}"));
            }
        }
        Ok(())
    });
    // The page of a node at one end of the cut link shows it too.
    let url_1 = format!("https://{}/#token={token}", cluster.http[&1]);
    render_until(&url_1, |dom| match link_state(dom, 1, 2).as_deref() {
        Some("cut") => Ok(()),
        other => Err(format!("link 1 -> 2 shown as {other:?}")),
    });
    // Where a person looking at a failure finds what the browser saw.
    let shot = std::env::temp_dir().join("kv_store-dashboard-test.png");
    browse(&url, &format!("--screenshot={}", shot.display()));
    cluster.kill(1);
}
