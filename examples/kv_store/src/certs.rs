//! `kv_store certs`: a cluster CA and one certificate per node, for the runtime's mutual TLS
//! between peers. A node's certificate names it as the DNS name `node-<pid>`, which is how a
//! peer knows which pid it talks to.
//!
//! The files in the output directory: `ca.pem` and `ca.key` (the CA; keep the key offline once
//! the cluster's certificates are issued), `node-<pid>.pem` and `node-<pid>.key` per node. Run
//! again on the same directory (e.g. for a node that joins later, or to renew one), it issues
//! with the CA it finds there, so the new certificates are trusted by the running nodes.

use omnipaxos_runtime::config::TlsFiles;
use omnipaxos_runtime::transport::tls::node_name;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair,
    KeyUsagePurpose,
};
use std::io::Write;
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// The CA's name; a CA found on disk is issued with under the same name, so that certificates
/// issued later name the issuer the nodes trust.
const CA_NAME: &str = "kv_store cluster CA";
/// How long the CA is valid.
const CA_DAYS: i64 = 3650;
/// How long a node certificate is valid (renew with `kv_store certs` before it ends).
const NODE_DAYS: i64 = 825;

/// The paths of node `pid`'s TLS files in `dir`.
pub fn node_files(dir: &Path, pid: u64) -> TlsFiles {
    TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join(format!("node-{pid}.pem")),
        key: dir.join(format!("node-{pid}.key")),
    }
}

/// What [`write`] did.
#[derive(Debug)]
pub struct Written {
    /// Whether the CA was created now (false: the one in the directory was used).
    pub new_ca: bool,
    /// The files written, CA first.
    pub files: Vec<PathBuf>,
}

/// The names every node certificate carries besides `node-<pid>`: clients on the node's own
/// machine reach its HTTPS port by these.
const LOCAL_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Writes a certificate and key for each of `nodes` into `out`, issued by the CA in `out`
/// (created first if there is none). Each names `node-<pid>` (how peers know it), the local
/// names, and `hosts` (the addresses and names clients use for the nodes' HTTPS ports).
pub fn write(out: &Path, nodes: &[u64]) -> Result<Written, String> {
    write_with_hosts(out, nodes, &[])
}

/// [`write`], with extra names for the nodes' HTTPS ports.
pub fn write_with_hosts(out: &Path, nodes: &[u64], hosts: &[String]) -> Result<Written, String> {
    if nodes.contains(&0) {
        return Err("pid 0 is not a node".into());
    }
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let (ca, new_ca) = load_or_create_ca(out)?;
    let mut files = Vec::new();
    if new_ca {
        files.extend([out.join("ca.pem"), out.join("ca.key")]);
    }
    for &pid in nodes {
        let paths = node_files(out, pid);
        let mut names = vec![node_name(pid)];
        names.extend(LOCAL_NAMES.iter().map(|n| n.to_string()));
        names.extend(hosts.iter().cloned());
        issue(&ca, names, &paths)?;
        files.extend([paths.cert, paths.key]);
    }
    Ok(Written { new_ca, files })
}

/// The paths of user `name`'s client certificate and key in `dir`.
pub fn client_files(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("client-{name}.pem")),
        dir.join(format!("client-{name}.key")),
    )
}

/// Writes a client certificate for user `name` (`client-<name>`) into `dir`, issued by the CA
/// there (created first if there is none). Presented to a node's HTTPS port, it authenticates
/// the client as that user.
pub fn write_client(dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), String> {
    if !crate::auth::valid_name(name) {
        return Err(format!(
            "{name:?} is not a valid user name (letters, digits, dashes)"
        ));
    }
    let files = write_named(
        dir,
        &format!("client-{name}"),
        vec![format!("client-{name}")],
    )?;
    Ok((files.cert, files.key))
}

/// Writes a certificate for `names` (DNS names, or IP addresses written as such) and its key
/// into `dir` as `<stem>.pem` and `<stem>.key`, issued by the CA in `dir` (created first if
/// there is none). For other programs run beside the cluster under the same CA, e.g. the
/// etcd cluster of `kv_store bench`, whose members name themselves by IP address.
pub fn write_named(dir: &Path, stem: &str, names: Vec<String>) -> Result<TlsFiles, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let (ca, _) = load_or_create_ca(dir)?;
    let files = TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join(format!("{stem}.pem")),
        key: dir.join(format!("{stem}.key")),
    };
    issue(&ca, names, &files)?;
    Ok(files)
}

/// Issues a certificate for `names` with `ca` and writes it and its key where `files` say.
fn issue(ca: &Ca, names: Vec<String>, files: &TlsFiles) -> Result<(), String> {
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let common_name = names.first().cloned().unwrap_or_default();
    let mut params = CertificateParams::new(names).map_err(|e| e.to_string())?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(NODE_DAYS);
    let cert = params
        .signed_by(&key, &ca.cert, &ca.key)
        .map_err(|e| e.to_string())?;
    write_file(&files.cert, cert.pem().as_bytes(), false)?;
    write_file(&files.key, key.serialize_pem().as_bytes(), true)
}

struct Ca {
    cert: Certificate,
    key: KeyPair,
}

fn ca_params() -> Result<CertificateParams, String> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, CA_NAME);
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}

/// The CA of `dir`: its key read back (the certificate is made again from the same name and
/// key, which is all a certificate it issues refers to), or a new one written there.
fn load_or_create_ca(dir: &Path) -> Result<(Ca, bool), String> {
    let key_path = dir.join("ca.key");
    let mut params = ca_params()?;
    if key_path.exists() {
        let pem = std::fs::read_to_string(&key_path)
            .map_err(|e| format!("{}: {e}", key_path.display()))?;
        let key = KeyPair::from_pem(&pem).map_err(|e| format!("{}: {e}", key_path.display()))?;
        if !dir.join("ca.pem").exists() {
            return Err(format!(
                "{} exists without ca.pem next to it",
                key_path.display()
            ));
        }
        let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
        return Ok((Ca { cert, key }, false));
    }
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(CA_DAYS);
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    write_file(&dir.join("ca.pem"), cert.pem().as_bytes(), false)?;
    write_file(&key_path, key.serialize_pem().as_bytes(), true)?;
    Ok((Ca { cert, key }, true))
}

/// Writes `bytes` to `path` (readable by its owner only if `secret`).
fn write_file(path: &Path, bytes: &[u8], secret: bool) -> Result<(), String> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut file = options
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_issued_later_use_the_ca_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let first = write(dir.path(), &[1, 2]).unwrap();
        assert!(first.new_ca);
        let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
        let later = write(dir.path(), &[4]).unwrap();
        assert!(!later.new_ca);
        assert_eq!(std::fs::read(dir.path().join("ca.pem")).unwrap(), ca);
        assert!(node_files(dir.path(), 4).cert.exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(node_files(dir.path(), 1).key)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "a key is its owner's alone");
        }
    }

    #[test]
    fn pid_zero_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(write(dir.path(), &[0]).is_err());
    }
}
