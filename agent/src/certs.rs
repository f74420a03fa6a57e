//! The cluster's certificate material: a CA, a server certificate per node agent (its
//! subject alternative names: the node's name and its listen addresses) and a client
//! certificate for the CLI. Files in one directory:
//!
//! - `ca.pem`, `ca.key`: the cluster CA (keep the key to issue more certificates);
//! - `NODE.pem`, `NODE.key`: the agent of node NODE;
//! - `client.pem`, `client.key`: the CLI.
use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// A node to issue an agent certificate for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCert {
    pub name: String,
    /// Addresses the agent listens on (IP subject alternative names).
    pub ips: Vec<IpAddr>,
}

impl NodeCert {
    /// `NAME` or `NAME=IP[/IP...]`.
    pub fn parse(text: &str) -> Result<Self, CertError> {
        let (name, ips) = text.split_once('=').unwrap_or((text, ""));
        check_name(name)?;
        let ips = ips
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse().map_err(|_| {
                    CertError::Invalid(format!("{text:?}: {s:?} is not an IP address"))
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(NodeCert {
            name: name.to_string(),
            ips,
        })
    }
}

/// Node names become file names and DNS names: letters, digits, `-`, `.`.
pub fn check_name(name: &str) -> Result<(), CertError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name != "ca"
        && name != "client"
        && !name.starts_with(['-', '.'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(CertError::Invalid(format!(
            "{name:?} is not a usable node name (letters, digits, '-', '.'; not ca or client)"
        )))
    }
}

/// Validity of what [`generate`] issues.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From now (minus a minute of clock skew) for `days`.
    pub fn days(days: i64) -> Self {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - Duration::minutes(1),
            not_after: now + Duration::days(days),
        }
    }
}

/// PEM certificate and key.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The cluster CA.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub issued: Issued,
}

impl Ca {
    pub fn new(validity: Validity) -> Result<Ca, CertError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "netpath cluster CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        let cert = params.self_signed(&key)?;
        let issued = Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        Ok(Ca {
            issuer: Issuer::new(params, key),
            issued,
        })
    }

    /// The CA of an existing directory (to issue more certificates).
    pub fn load(dir: &Path) -> Result<Ca, CertError> {
        let cert_pem = read(&dir.join("ca.pem"))?;
        let key_pem = read(&dir.join("ca.key"))?;
        let key = KeyPair::from_pem(&key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)?;
        Ok(Ca {
            issuer,
            issued: Issued { cert_pem, key_pem },
        })
    }

    fn issue(
        &self,
        cn: &str,
        sans: Vec<SanType>,
        usage: ExtendedKeyUsagePurpose,
        validity: Validity,
    ) -> Result<Issued, CertError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        params.subject_alt_names = sans;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The server certificate of a node's agent.
    pub fn agent(&self, node: &NodeCert, validity: Validity) -> Result<Issued, CertError> {
        check_name(&node.name)?;
        let mut sans = vec![SanType::DnsName(node.name.clone().try_into()?)];
        sans.extend(node.ips.iter().map(|ip| SanType::IpAddress(*ip)));
        self.issue(
            &node.name,
            sans,
            ExtendedKeyUsagePurpose::ServerAuth,
            validity,
        )
    }

    /// A client certificate (the CLI's).
    pub fn client(&self, name: &str, validity: Validity) -> Result<Issued, CertError> {
        self.issue(
            name,
            vec![SanType::DnsName(name.to_string().try_into()?)],
            ExtendedKeyUsagePurpose::ClientAuth,
            validity,
        )
    }
}

fn read(path: &Path) -> Result<String, CertError> {
    std::fs::read_to_string(path).map_err(|source| CertError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `NAME.pem` and `NAME.key` (the key readable by its owner only).
pub fn write(dir: &Path, name: &str, issued: &Issued) -> Result<(), CertError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CertError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let cert = dir.join(format!("{name}.pem"));
    std::fs::write(&cert, &issued.cert_pem).map_err(io(&cert))?;
    let key = dir.join(format!("{name}.key"));
    let _ = std::fs::remove_file(&key);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key)
        .map_err(io(&key))?;
    std::io::Write::write_all(&mut f, issued.key_pem.as_bytes()).map_err(io(&key))?;
    Ok(())
}

/// `netpath certs`: a new CA in `dir` (or the existing one when `dir` has `ca.key` and
/// `reuse_ca`), an agent certificate per node and the client certificate.
pub fn generate(
    dir: &Path,
    nodes: &[NodeCert],
    reuse_ca: bool,
    validity: Validity,
) -> Result<Vec<PathBuf>, CertError> {
    let ca = if reuse_ca && dir.join("ca.key").exists() {
        Ca::load(dir)?
    } else {
        let ca = Ca::new(validity)?;
        write(dir, "ca", &ca.issued)?;
        ca
    };
    let mut written = vec![dir.join("ca.pem")];
    for node in nodes {
        write(dir, &node.name, &ca.agent(node, validity)?)?;
        written.push(dir.join(format!("{}.pem", node.name)));
    }
    write(dir, "client", &ca.client("netpath-cli", validity)?)?;
    written.push(dir.join("client.pem"));
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_specs_parse_with_and_without_addresses() {
        assert_eq!(
            NodeCert::parse("node-1=127.0.0.1/fd00::1").unwrap(),
            NodeCert {
                name: "node-1".into(),
                ips: vec!["127.0.0.1".parse().unwrap(), "fd00::1".parse().unwrap()]
            }
        );
        assert!(NodeCert::parse("node-2").unwrap().ips.is_empty());
        assert!(NodeCert::parse("node-2=nope").is_err());
        assert!(NodeCert::parse("../x").is_err());
        assert!(NodeCert::parse("ca").is_err());
    }

    #[test]
    fn a_loaded_ca_issues_certificates_too() {
        let dir = tempfile::tempdir().unwrap();
        let nodes = [NodeCert::parse("n1=127.0.0.1").unwrap()];
        generate(dir.path(), &nodes, false, Validity::days(1)).unwrap();
        let ca_before = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();
        generate(dir.path(), &nodes, true, Validity::days(1)).unwrap();
        let ca_after = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();
        assert_eq!(ca_before, ca_after);
        for f in ["ca.key", "n1.pem", "n1.key", "client.pem", "client.key"] {
            assert!(dir.path().join(f).exists(), "{f}");
        }
    }
}
