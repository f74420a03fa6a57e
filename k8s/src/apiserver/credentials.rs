//! What a client needs to trust and be let in: a fresh CA and server certificate per server
//! (never the agents'), a random bearer token, and the kubeconfig that carries both.
use std::net::IpAddr;

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use super::ApiError;

/// The server's certificate chain and key, the CA clients trust, and the token.
#[derive(Clone)]
pub struct Credentials {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub token: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("ca_pem", &self.ca_pem)
            .finish_non_exhaustive()
    }
}

fn rc(e: rcgen::Error) -> ApiError {
    ApiError::Tls(e.to_string())
}

impl Credentials {
    /// A new CA (its key is dropped once the server certificate is signed), a server
    /// certificate for `localhost` and `ips`, valid for `days`, and a 256-bit token.
    pub fn generate(ips: &[IpAddr], days: i64) -> Result<Credentials, ApiError> {
        let now = time::OffsetDateTime::now_utc();
        let (not_before, not_after) = (
            now - time::Duration::minutes(1),
            now + time::Duration::days(days),
        );
        let ca_key = KeyPair::generate().map_err(rc)?;
        let mut ca = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "netpath lab API CA");
        ca.distinguished_name = dn;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca.not_before = not_before;
        ca.not_after = not_after;
        let ca_cert = ca.self_signed(&ca_key).map_err(rc)?;
        let issuer = Issuer::new(ca, ca_key);

        let key = KeyPair::generate().map_err(rc)?;
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).map_err(rc)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "netpath lab API");
        params.distinguished_name = dn;
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params.signed_by(&key, &issuer).map_err(rc)?;
        Ok(Credentials {
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            token: random_token()?,
        })
    }
}

/// 32 random bytes from the kernel, hex.
fn random_token() -> Result<String, ApiError> {
    use std::io::Read;
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| ApiError::Tls(format!("/dev/urandom: {e}")))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// A kubeconfig with one cluster, user and context, all named `name`, for `server`
/// (`https://127.0.0.1:PORT`), trusting `ca_pem` and sending `token`.
pub fn kubeconfig(name: &str, server: &str, ca_pem: &str, token: &str, namespace: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    // JSON is YAML: kubectl and kube-rs read it, and quoting is serde_json's.
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server, "certificate-authority-data": ca}}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name, "namespace": namespace}}],
        "current-context": name,
        "preferences": {},
    });
    serde_json::to_string_pretty(&doc).expect("kubeconfig serialises") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_fresh_and_pem() {
        let a = Credentials::generate(&["127.0.0.1".parse().unwrap()], 1).unwrap();
        let b = Credentials::generate(&[], 1).unwrap();
        assert!(a.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(a.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(a.key_pem.contains("PRIVATE KEY"));
        assert_eq!(a.token.len(), 64);
        assert_ne!(a.token, b.token);
        assert_ne!(a.ca_pem, b.ca_pem);
        assert!(
            !format!("{a:?}").contains(&a.token),
            "Debug hides the token"
        );
    }

    #[test]
    fn kubeconfig_names_server_ca_and_token() {
        let k = kubeconfig(
            "netpath-lab",
            "https://127.0.0.1:1234",
            "PEM",
            "tok",
            "default",
        );
        let v: serde_json::Value = serde_json::from_str(&k).unwrap();
        assert_eq!(v["current-context"], "netpath-lab");
        assert_eq!(
            v["clusters"][0]["cluster"]["server"],
            "https://127.0.0.1:1234"
        );
        assert_eq!(
            v["clusters"][0]["cluster"]["certificate-authority-data"],
            "UEVN"
        );
        assert_eq!(v["users"][0]["user"]["token"], "tok");
        assert_eq!(v["contexts"][0]["context"]["namespace"], "default");
    }
}
