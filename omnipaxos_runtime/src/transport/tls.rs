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

impl TlsContext {
    pub(crate) fn load(files: &TlsFiles) -> io::Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for ca in read_certs(&files.ca)? {
            roots
                .add(ca)
                .map_err(|e| invalid(format!("{}: {e}", files.ca.display())))?;
        }
        let roots = Arc::new(roots);
        let certs = read_certs(&files.cert)?;
        let key = read_key(&files.key)?;
        let tls_err = |e: rustls::Error| invalid(e.to_string());
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| invalid(e.to_string()))?;
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(tls_err)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(tls_err)?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(tls_err)?
            .with_root_certificates(roots.clone())
            .with_client_auth_cert(certs, key)
            .map_err(tls_err)?;
        Ok(Self {
            connector: TlsConnector::from(Arc::new(client)),
            acceptor: TlsAcceptor::from(Arc::new(server)),
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
    let Ok(cert) = webpki::EndEntityCert::try_from(cert) else {
        return Vec::new();
    };
    cert.valid_dns_names().filter_map(pid_of_name).collect()
}

/// The pid a DNS name `node-<pid>` names, read strictly: the exact decimal digits
/// [`node_name`] writes (no sign, no leading zero, no other text), so that one pid has exactly
/// one name and `node-02` names nobody.
fn pid_of_name(name: &str) -> Option<NodeId> {
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
