//! A small blocking HTTP/1.1 client for the node's API, used by `kv_store client`, the demo
//! and the tests (one request per connection, `Connection: close`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A response: the status code and the JSON body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: serde_json::Value,
}

/// Sends one request and reads the whole response.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    timeout: Duration,
) -> std::io::Result<Response> {
    let (status, payload) = request_bytes(addr, method, path, body.as_bytes(), timeout)?;
    let text = String::from_utf8_lossy(&payload);
    let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text.into_owned()));
    Ok(Response { status, body })
}

/// Sends one request; the status code and the body's bytes as they came.
pub fn request_bytes(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> std::io::Result<(u16, Vec<u8>)> {
    let invalid = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| invalid("no HTTP header end"))?;
    let status = std::str::from_utf8(&raw[..end])
        .ok()
        .and_then(|head| head.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid("no HTTP status"))?;
    raw.drain(..end + 4);
    Ok((status, raw))
}

/// Keys are put in the path as they are; this encodes the few characters that would break it.
pub fn key_path(key: &str) -> String {
    let mut out = String::from("/kv/");
    for b in key.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
