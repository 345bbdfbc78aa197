//! A small blocking HTTP/1.1 client for the node's API, used by `kv_store client`, the demo,
//! the nodes themselves (state transfers, the dashboard's cluster view) and the tests: plain
//! HTTP or HTTPS, with a client certificate or a bearer token.

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::ServerName;

/// A response: the status code and the JSON body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: serde_json::Value,
}

/// How to reach nodes: the TLS settings and the credentials every request carries.
#[derive(Clone, Default)]
pub struct Client {
    tls: Option<Arc<rustls::ClientConfig>>,
    /// The name the server's certificate must carry (default: the address dialled).
    server_name: Option<String>,
    /// The `Authorization` header's value.
    authorization: Option<String>,
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

impl Client {
    /// Plain HTTP, no credentials.
    pub fn plain() -> Self {
        Self::default()
    }

    /// HTTPS trusting the CA in `ca`, presenting a client certificate if given.
    pub fn https(ca: &Path, cert_and_key: Option<(&Path, &Path)>) -> std::io::Result<Self> {
        let tls = omnipaxos_runtime::transport::tls::client_config(ca, cert_and_key)?;
        Ok(Self {
            tls: Some(tls),
            ..Self::default()
        })
    }

    /// The same, sending `Authorization: Bearer <token>`.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.authorization = Some(format!("Bearer {}", token.into()));
        self
    }

    /// The same, sending `Authorization: <value>` (servers that take a bare token).
    pub fn with_raw_authorization(mut self, value: impl Into<String>) -> Self {
        self.authorization = Some(value.into());
        self
    }

    /// The same, expecting the server's certificate to name `name` (e.g. `node-2`) instead of
    /// the address dialled.
    pub fn with_server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// The same for talking to node `pid` of the cluster by its certificate's name
    /// (`node-<pid>`), whatever address it is reached at (HTTPS; plain HTTP is unchanged).
    pub fn for_node(&self, pid: u64) -> Self {
        match self.tls {
            Some(_) => self
                .clone()
                .with_server_name(omnipaxos_runtime::transport::tls::node_name(pid)),
            None => self.clone(),
        }
    }

    /// Sends one request and reads the whole response (a JSON body, or a string for text).
    pub fn request(
        &self,
        addr: SocketAddr,
        method: &str,
        path: &str,
        body: &str,
        timeout: Duration,
    ) -> std::io::Result<Response> {
        let (status, payload) = self.request_bytes(addr, method, path, body.as_bytes(), timeout)?;
        let text = String::from_utf8_lossy(&payload);
        let body =
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text.into_owned()));
        Ok(Response { status, body })
    }

    /// Sends one request on a connection of its own; the status code and the body's bytes.
    pub fn request_bytes(
        &self,
        addr: SocketAddr,
        method: &str,
        path: &str,
        body: &[u8],
        timeout: Duration,
    ) -> std::io::Result<(u16, Vec<u8>)> {
        let mut conn = self.connect(addr, timeout)?;
        Ok(conn
            .exchange(method, path, body, self.authorization.as_deref(), true)?
            .0)
    }

    /// A connection kept open for many requests in a row.
    pub fn keep_alive(&self, addr: SocketAddr, timeout: Duration) -> KeepAlive {
        KeepAlive {
            client: self.clone(),
            addr,
            timeout,
            conn: None,
        }
    }

    fn connect(&self, addr: SocketAddr, timeout: Duration) -> std::io::Result<Connection> {
        Ok(Connection {
            reader: std::io::BufReader::new(self.stream(addr, timeout)?),
            addr,
        })
    }

    /// A connection to `addr` (over TLS if this client uses it) to write any bytes to: for
    /// tests of what a server does with malformed, crafted or slow requests.
    pub fn stream(&self, addr: SocketAddr, timeout: Duration) -> std::io::Result<Stream> {
        let tcp = TcpStream::connect_timeout(&addr, timeout)?;
        tcp.set_read_timeout(Some(timeout))?;
        tcp.set_write_timeout(Some(timeout))?;
        tcp.set_nodelay(true)?;
        let stream = match &self.tls {
            None => Stream::Plain(tcp),
            Some(config) => {
                let name = match &self.server_name {
                    Some(n) => {
                        ServerName::try_from(n.clone()).map_err(|e| invalid(&e.to_string()))?
                    }
                    None => ServerName::IpAddress(addr.ip().into()),
                };
                let session = rustls::ClientConnection::new(config.clone(), name)
                    .map_err(|e| invalid(&e.to_string()))?;
                Stream::Tls(Box::new(rustls::StreamOwned::new(session, tcp)))
            }
        };
        Ok(stream)
    }
}

/// A byte stream to a server: plain TCP or TLS over it.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    /// The TCP connection underneath (for its timeouts).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

struct Connection {
    reader: std::io::BufReader<Stream>,
    addr: SocketAddr,
}

impl Connection {
    /// Writes one request (asking the server to close the connection after it if `close`)
    /// and reads its response: the status and body, and whether the connection is closing.
    fn exchange(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
        authorization: Option<&str>,
        close: bool,
    ) -> std::io::Result<((u16, Vec<u8>), bool)> {
        // POST bodies of the API are JSON, and the node takes no other (`crate::http_guard`).
        let content_type = match method {
            "POST" => "Content-Type: application/json\r\n",
            _ => "",
        };
        let authorization = authorization
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        let connection = if close { "Connection: close\r\n" } else { "" };
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{connection}{content_type}{authorization}Content-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        let stream = self.reader.get_mut();
        stream.write_all(&request)?;
        stream.flush()?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| invalid("no HTTP status"))?;
        let mut length = None;
        let mut closes = close;
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(invalid("the connection closed in the header"));
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                match name.trim().to_ascii_lowercase().as_str() {
                    "content-length" => {
                        length = Some(value.trim().parse().map_err(|_| invalid("bad length"))?)
                    }
                    "connection" => closes |= value.trim().eq_ignore_ascii_case("close"),
                    _ => {}
                }
            }
        }
        let payload = match length {
            Some(n) => {
                let mut payload = vec![0; n];
                self.reader.read_exact(&mut payload)?;
                payload
            }
            None => {
                let mut payload = Vec::new();
                self.reader.read_to_end(&mut payload)?;
                closes = true;
                payload
            }
        };
        Ok(((status, payload), closes))
    }
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
    client: Client,
    addr: SocketAddr,
    timeout: Duration,
    conn: Option<Connection>,
}

impl KeepAlive {
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
                self.conn = None;
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
        if self.conn.is_none() {
            self.conn = Some(self.client.connect(self.addr, self.timeout)?);
        }
        let conn = self.conn.as_mut().ok_or_else(|| invalid("no connection"))?;
        let authorization = self.client.authorization.clone();
        let (answer, closes) =
            conn.exchange(method, path, body, authorization.as_deref(), false)?;
        if closes {
            self.conn = None;
        }
        Ok(answer)
    }
}
