//! Bootstrap tokens and the CA public-key pin workers join with (kubeadm's formats).

use std::fmt;

use rand::Rng;
use sha2::{Digest, Sha256};

use super::PkiError;

/// A bootstrap token `[a-z0-9]{6}.[a-z0-9]{16}`: the id is public, the secret is not.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    pub id: String,
    secret: String,
}

impl fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BootstrapToken({}.<redacted>)", self.id)
    }
}

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

fn random_part(rng: &mut impl Rng, n: usize) -> String {
    (0..n)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

impl BootstrapToken {
    /// A fresh token from the OS random generator.
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        Self {
            id: random_part(&mut rng, 6),
            secret: random_part(&mut rng, 16),
        }
    }

    /// The secret half; only for writing the token Secret and the worker's bootstrap kubeconfig.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// `id.secret`, as passed to `kboot run worker --token`.
    pub fn expose(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }
}

impl std::str::FromStr for BootstrapToken {
    type Err = PkiError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| ALPHABET.contains(&b));
        match s.trim().split_once('.') {
            Some((id, secret)) if ok(id, 6) && ok(secret, 16) => Ok(Self {
                id: id.to_string(),
                secret: secret.to_string(),
            }),
            _ => Err(PkiError::BadToken),
        }
    }
}

/// `sha256:<hex>` of the CA certificate's DER SubjectPublicKeyInfo: kubeadm's
/// `--discovery-token-ca-cert-hash`. It pins the key, so it survives CA re-issuance with the same key.
pub fn ca_cert_hash(ca_pem: &str) -> Result<String, PkiError> {
    let der = super::pem_cert_der(ca_pem, "CA certificate")?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| PkiError::ParseCert {
        what: "CA certificate".into(),
        message: e.to_string(),
    })?;
    Ok(format!(
        "sha256:{}",
        hex::encode(Sha256::digest(cert.tbs_certificate.subject_pki.raw))
    ))
}

/// Refuses a CA whose public key does not match the pin the operator got from the master.
pub fn verify_ca_hash(ca_pem: &str, expected: &str) -> Result<(), PkiError> {
    let want = expected.trim().to_ascii_lowercase();
    let hex_part = want
        .strip_prefix("sha256:")
        .ok_or_else(|| PkiError::BadCaHash(expected.to_string()))?;
    if hex_part.len() != 64 || !hex_part.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(PkiError::BadCaHash(expected.to_string()));
    }
    let got = ca_cert_hash(ca_pem)?;
    if got != want {
        return Err(PkiError::CaHashMismatch {
            expected: want,
            actual: got,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_generate_has_kubeadm_shape_and_round_trips() {
        let t = BootstrapToken::generate();
        let parsed: BootstrapToken = t.expose().parse().unwrap();
        assert_eq!(parsed, t);
        assert_eq!(t.id.len(), 6);
        assert_ne!(BootstrapToken::generate(), t, "tokens are random");
    }

    #[test]
    fn token_debug_never_shows_the_secret() {
        let t: BootstrapToken = "abcdef.0123456789abcdef".parse().unwrap();
        let d = format!("{t:?}");
        assert!(d.contains("abcdef") && !d.contains("0123456789abcdef"), "{d}");
    }

    #[test]
    fn token_parse_rejects_wrong_shapes() {
        for bad in [
            "abcdef",
            "abcde.0123456789abcdef",
            "ABCDEF.0123456789abcdef",
            "abcdef.0123456789abcde!",
        ] {
            assert!(bad.parse::<BootstrapToken>().is_err(), "{bad}");
        }
    }
}
