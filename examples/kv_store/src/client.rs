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
    // POST bodies of the API are JSON, and the node takes no other (`crate::http_guard`).
    let content_type = match method {
        "POST" => "Content-Type: application/json\r\n",
        _ => "",
    };
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{content_type}Content-Length: {}\r\n\r\n",
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

/// One HTTP/1.1 connection kept open for many requests in a row (the large-state scenarios send
/// millions); reconnects once when the server closed it.
pub struct KeepAlive {
    addr: SocketAddr,
    timeout: Duration,
    stream: Option<std::io::BufReader<TcpStream>>,
}

impl KeepAlive {
    pub fn new(addr: SocketAddr, timeout: Duration) -> Self {
        Self {
            addr,
            timeout,
            stream: None,
        }
    }

    /// Sends one request; the status code and the body.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> std::io::Result<(u16, Vec<u8>)> {
        match self.try_request(method, path, body) {
            Ok(answer) => Ok(answer),
            Err(_) => {
                // The server may have closed the idle connection: once more on a new one.
                self.stream = None;
                self.try_request(method, path, body)
            }
        }
    }

    fn try_request(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> std::io::Result<(u16, Vec<u8>)> {
        use std::io::BufRead;
        let invalid =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
        if self.stream.is_none() {
            let stream = TcpStream::connect_timeout(&self.addr, self.timeout)?;
            stream.set_read_timeout(Some(self.timeout))?;
            stream.set_write_timeout(Some(self.timeout))?;
            stream.set_nodelay(true)?;
            self.stream = Some(std::io::BufReader::new(stream));
        }
        let reader = self
            .stream
            .as_mut()
            .ok_or_else(|| invalid("no connection"))?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        reader.get_mut().write_all(&request)?;
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| invalid("no HTTP status"))?;
        let mut length = 0usize;
        let mut close = false;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Err(invalid("the connection closed in the header"));
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                match name.trim().to_ascii_lowercase().as_str() {
                    "content-length" => {
                        length = value.trim().parse().map_err(|_| invalid("bad length"))?
                    }
                    "connection" => close = value.trim().eq_ignore_ascii_case("close"),
                    _ => {}
                }
            }
        }
        let mut payload = vec![0; length];
        reader.read_exact(&mut payload)?;
        if close {
            self.stream = None;
        }
        Ok((status, payload))
    }
}
