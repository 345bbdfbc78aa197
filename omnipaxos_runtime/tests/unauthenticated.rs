//! What a stranger who can reach a node's peer port costs it before proving who it is: a few
//! bytes per connection, and at most a handful of connections per address. The node's peer
//! timeout is an hour here, so every closure seen below is the node refusing, not a timeout.

mod common;
use common::raw_frames;
use omnipaxos_runtime::transport::tcp::TcpTransport;
use omnipaxos_runtime::transport::{Inbox, Transport};
use omnipaxos_runtime::NetworkConfig;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HELLO: u8 = 0;
const PING: u8 = 2;
const PONG: u8 = 3;
/// A guard against a test hanging forever, far above what any answer here takes.
const GUARD: Duration = Duration::from_secs(60);

/// Node 1 listening, with peer 2 configured (at a port nobody listens on).
fn node() -> (TcpTransport<u64>, SocketAddr) {
    let mut config = NetworkConfig::new("127.0.0.1:0".parse().unwrap(), Default::default());
    config.peer_timeout = Duration::from_secs(3600);
    let mut transport = TcpTransport::bind(1, config).expect("bind");
    transport.add_peer(2, Some("127.0.0.1:9".into()));
    let addr = transport.local_addr().expect("bound");
    let (inbox, events) = Inbox::new(16);
    // The node's receiver stays open for the test (a closed inbox ends connections).
    std::mem::forget(events);
    transport.start(1, inbox);
    (transport, addr)
}

/// Waits until the node closes `stream` (end of file or a reset).
async fn closed_by_the_node(stream: &mut TcpStream) {
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(GUARD, stream.read(&mut byte))
        .await
        .expect("the node closed the connection");
    assert!(matches!(read, Ok(0) | Err(_)), "got {read:?}");
}

/// Sends a hello from peer 2 and a ping on `stream` (just a ping with `hello = false`); true
/// once the node answered with a pong, false if it hung up.
async fn pong_after(stream: &mut TcpStream, hello: bool) -> bool {
    let mut frames = vec![(PING, vec![])];
    if hello {
        frames.insert(0, (HELLO, 2u64.to_be_bytes().to_vec()));
    }
    if stream.write_all(&raw_frames(&frames)).await.is_err() {
        return false;
    }
    let mut pong = [0u8; 5];
    match tokio::time::timeout(GUARD, stream.read_exact(&mut pong)).await {
        Ok(Ok(_)) => pong == [0, 0, 0, 1, PONG],
        Ok(Err(_)) => false,
        Err(_) => panic!("no answer within {GUARD:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_announcing_a_large_frame_is_refused_before_its_body() {
    let (mut transport, addr) = node();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The header of a 16 MiB "hello", and nothing after it.
    let mut header = (16u32 << 20).to_be_bytes().to_vec();
    header.push(HELLO);
    stream.write_all(&header).await.unwrap();
    closed_by_the_node(&mut stream).await;
    // Counted by the connection's task once it ended, which may be a moment after the close.
    tokio::time::timeout(GUARD, async {
        while transport.stats().refused_frames == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the refusal is counted");
    transport.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holds_at_most_sixteen_unauthenticated_connections() {
    let (mut transport, addr) = node();
    let mut silent = Vec::new();
    for _ in 0..16 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    // The 16 are taken (the node answers a hello on the first of them; it then no longer
    // counts as unauthenticated), so 15 stay silent and one more gets in, then none.
    assert!(pong_after(&mut silent[0], true).await);
    silent.push(TcpStream::connect(addr).await.unwrap());
    let mut refused = TcpStream::connect(addr).await.unwrap();
    closed_by_the_node(&mut refused).await;
    // Once the silent ones leave, the address may connect again (the node may not have seen
    // them go yet: then it refuses, and the next try is taken).
    drop(silent.split_off(1));
    let mut again = loop {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        if pong_after(&mut stream, true).await {
            break stream;
        }
        tokio::task::yield_now().await;
    };
    assert!(pong_after(&mut again, false).await);
    transport.shutdown().await;
}
