//! Mutual TLS for the TCP transport (feature `tls`): both ends present a certificate signed by
//! the cluster's CA; a node's certificate names it as the DNS name `node-<pid>`, which the
//! connecting side checks for the peer it dials and the accepting side compares with the pid
//! the peer claims.

use crate::config::TlsFiles;
use crate::wire::NodeId;
use std::io;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};

/// The DNS name a node's certificate must carry.
pub fn node_name(pid: NodeId) -> String {
    format!("node-{pid}")
}

pub(crate) struct TlsContext {
    connector: TlsConnector,
    acceptor: TlsAcceptor,
    roots: Arc<RootCertStore>,
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

fn read_certs(path: &std::path::Path) -> io::Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice()).collect::<Result<_, _>>()?;
    if certs.is_empty() {
        return Err(invalid(format!("{}: no certificate", path.display())));
    }
    Ok(certs)
}

fn read_key(path: &std::path::Path) -> io::Result<PrivateKeyDer<'static>> {
    let pem = std::fs::read(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    rustls_pemfile::private_key(&mut pem.as_slice())?
        .ok_or_else(|| invalid(format!("{}: no private key", path.display())))
}

/// Whether a TLS server asks its clients for a certificate signed by the CA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// Every client must present one (the peer port).
    Required,
    /// A client may present one or not (an application's client port, where a client may
    /// authenticate otherwise); one that is presented must be valid.
    Optional,
}

fn roots_of(files: &TlsFiles) -> io::Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    for ca in read_certs(&files.ca)? {
        roots
            .add(ca)
            .map_err(|e| invalid(format!("{}: {e}", files.ca.display())))?;
    }
    Ok(Arc::new(roots))
}

fn tls_err(e: rustls::Error) -> io::Error {
    invalid(e.to_string())
}

/// A TLS server configuration presenting `files.cert` and checking client certificates
/// against `files.ca` as `client_auth` says.
pub fn server_config(files: &TlsFiles, client_auth: ClientAuth) -> io::Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = roots_of(files)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
    let verifier = match client_auth {
        ClientAuth::Required => verifier,
        ClientAuth::Optional => verifier.allow_unauthenticated(),
    }
    .build()
    .map_err(|e| invalid(e.to_string()))?;
    let server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(read_certs(&files.cert)?, read_key(&files.key)?)
        .map_err(tls_err)?;
    Ok(Arc::new(server))
}

/// A TLS client configuration trusting `ca` and presenting `cert` and `key` if given.
pub fn client_config(
    ca: &std::path::Path,
    cert_and_key: Option<(&std::path::Path, &std::path::Path)>,
) -> io::Result<Arc<ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca_cert in read_certs(ca)? {
        roots
            .add(ca_cert)
            .map_err(|e| invalid(format!("{}: {e}", ca.display())))?;
    }
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_root_certificates(roots);
    let client = match cert_and_key {
        Some((cert, key)) => builder
            .with_client_auth_cert(read_certs(cert)?, read_key(key)?)
            .map_err(tls_err)?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(client))
}

impl TlsContext {
    pub(crate) fn load(files: &TlsFiles) -> io::Result<Self> {
        let roots = roots_of(files)?;
        let server = server_config(files, ClientAuth::Required)?;
        let client = client_config(&files.ca, Some((&files.cert, &files.key)))?;
        Ok(Self {
            connector: TlsConnector::from(client),
            acceptor: TlsAcceptor::from(server),
            roots,
        })
    }

    /// Opens TLS to peer `pid`, whose certificate must name it.
    pub(crate) async fn connect(
        &self,
        pid: NodeId,
        tcp: TcpStream,
    ) -> io::Result<client::TlsStream<TcpStream>> {
        let name = ServerName::try_from(node_name(pid)).map_err(|e| invalid(e.to_string()))?;
        self.connector.connect(name, tcp).await
    }

    /// Accepts TLS from a peer; returns the pids its (CA-verified) certificate names.
    pub(crate) async fn accept(
        &self,
        tcp: TcpStream,
    ) -> io::Result<(server::TlsStream<TcpStream>, Vec<NodeId>)> {
        let stream = self.acceptor.accept(tcp).await?;
        let _ = &self.roots;
        let names = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|certs| certs.first())
            .map(named_pids)
            .unwrap_or_default();
        Ok((stream, names))
    }
}

/// The pids a certificate names (`node-<pid>` DNS names), checked by webpki's own name matching.
fn named_pids(cert: &CertificateDer<'_>) -> Vec<NodeId> {
    dns_names(cert)
        .iter()
        .filter_map(|n| pid_of_name(n))
        .collect()
}

/// The DNS names of a (verified) certificate, as webpki reads them.
pub fn dns_names(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok(cert) = webpki::EndEntityCert::try_from(cert) else {
        return Vec::new();
    };
    cert.valid_dns_names().map(str::to_string).collect()
}

/// The pid a DNS name `node-<pid>` names, read strictly: the exact decimal digits
/// [`node_name`] writes (no sign, no leading zero, no other text), so that one pid has exactly
/// one name and `node-02` names nobody.
pub fn pid_of_name(name: &str) -> Option<NodeId> {
    let digits = name.strip_prefix("node-")?;
    let pid: NodeId = digits.parse().ok()?;
    (pid != 0 && node_name(pid) == name).then_some(pid)
}

#[cfg(test)]
mod tests {
    use super::pid_of_name;

    #[test]
    fn certificate_names_are_read_strictly() {
        assert_eq!(pid_of_name("node-2"), Some(2));
        assert_eq!(pid_of_name("node-12345"), Some(12345));
        for refused in [
            "node-02", "node-+2", "node-", "node-0", "node-2x", "node- 2", "Node-2", "node-2.",
            "xnode-2", "node--2",
        ] {
            assert_eq!(pid_of_name(refused), None, "{refused}");
        }
    }
}
