//! Worker join discovery, as kubeadm's token discovery: fetch the master's public
//! `kube-public/cluster-info`, check the bootstrap token's signature on it, pin the CA it
//! carries against `--ca-cert-hash`, and re-read it over TLS trusting only that CA.
//!
//! The first request cannot verify the server (the worker has no CA yet); everything it
//! returns is checked before use: the token signature proves the master knows the token
//! secret, the hash proves the CA is the one the operator was told about.

use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::pki::{self, BootstrapToken, PkiError};

const CLUSTER_INFO: &str = "/api/v1/namespaces/kube-public/configmaps/cluster-info";

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("fetch cluster-info from {url}")]
    Fetch {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered {status}: is this the master's apiserver, and are its bootstrap objects applied?")]
    Status { url: String, status: u16 },
    #[error("cluster-info from {url} is malformed: {what}")]
    Malformed { url: String, what: String },
    #[error(
        "cluster-info is not signed for token id {token_id}: {}",
        if *others_signed {
            "the master signs other tokens, so this one is unknown to it or expired; check --token"
        } else {
            "no token is signed yet; is the master's controller-manager running?"
        }
    )]
    NotSigned {
        token_id: String,
        /// The bootstrap signer has signed other tokens: it runs, and this token is not one of them.
        others_signed: bool,
    },
    #[error("cluster-info's signature does not match the token: wrong --token secret, or an impostor answered")]
    BadSignature,
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("cluster-info changed between the unverified and the verified read: refusing to join")]
    Changed,
    #[error("build the HTTPS client")]
    Client(#[source] reqwest::Error),
    #[error("gave up after waiting {waited_s} s for the master")]
    GaveUp {
        waited_s: u64,
        #[source]
        last: Box<JoinError>,
    },
}

impl JoinError {
    /// Whether the master may still be coming up: its apiserver unreachable or answering
    /// errors (before the bootstrap objects and their RBAC are applied, anonymous reads of
    /// cluster-info are refused), or cluster-info not signed by any token yet (the
    /// controller-manager's bootstrap signer starts after leader election). A wrong token,
    /// hash or signature is never worth waiting for.
    fn master_may_be_starting(&self) -> bool {
        match self {
            JoinError::Fetch { .. } | JoinError::Status { .. } => true,
            JoinError::NotSigned { others_signed, .. } => !others_signed,
            _ => false,
        }
    }
}

/// How long [`discover_ca_waiting`] waits for the master, and how often it asks.
#[derive(Debug, Clone, Copy)]
pub struct Patience {
    /// Everything, as kubeadm's discovery timeout (5 min by default).
    pub timeout: Duration,
    /// A token left unsigned while the signer signs others: the signer signs a token
    /// created a moment ago within a second or two of seeing it, so not long.
    pub new_token_grace: Duration,
    pub interval: Duration,
}

impl Default for Patience {
    fn default() -> Self {
        Patience {
            timeout: Duration::from_secs(300),
            new_token_grace: Duration::from_secs(20),
            interval: Duration::from_secs(2),
        }
    }
}

/// [`discover_ca`], retried while the master may still be starting (a worker started
/// with or just after its master, or both after a reboot), within `patience`.
/// `waiting` hears each new reason to wait, once.
pub async fn discover_ca_waiting(
    api_server: &str,
    token: &BootstrapToken,
    ca_cert_hash: &str,
    patience: Patience,
    waiting: &mut (dyn FnMut(&JoinError) + Send),
) -> Result<String, JoinError> {
    let start = tokio::time::Instant::now();
    let mut unsigned_since = None;
    let mut last_reason = String::new();
    loop {
        let err = match discover_ca(api_server, token, ca_cert_hash).await {
            Ok(ca) => return Ok(ca),
            Err(e) => e,
        };
        let new_token = matches!(
            err,
            JoinError::NotSigned {
                others_signed: true,
                ..
            }
        ) && unsigned_since.get_or_insert_with(tokio::time::Instant::now).elapsed()
            < patience.new_token_grace;
        if !(err.master_may_be_starting() || new_token) {
            return Err(err);
        }
        if start.elapsed() + patience.interval > patience.timeout {
            return Err(JoinError::GaveUp {
                waited_s: start.elapsed().as_secs(),
                last: Box::new(err),
            });
        }
        let reason = crate::base::error::chain(&err);
        if reason != last_reason {
            waiting(&err);
            last_reason = reason;
        }
        tokio::time::sleep(patience.interval).await;
    }
}

/// The detached JWS (`header..signature`, HS256 keyed with the token secret) the
/// controller-manager's bootstrap signer puts next to the kubeconfig in cluster-info.
pub fn verify_detached_jws(jws: &str, content: &str, token: &BootstrapToken) -> Result<(), JoinError> {
    let mut parts = jws.split('.');
    let (Some(header), Some(""), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JoinError::BadSignature);
    };
    let header_json = URL_SAFE_NO_PAD.decode(header).map_err(|_| JoinError::BadSignature)?;
    let fields: serde_json::Value = serde_json::from_slice(&header_json).map_err(|_| JoinError::BadSignature)?;
    if fields["alg"] != "HS256" || fields["kid"] != token.id.as_str() {
        return Err(JoinError::BadSignature);
    }
    let expected = URL_SAFE_NO_PAD.decode(signature).map_err(|_| JoinError::BadSignature)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(token.secret().as_bytes()).map_err(|_| JoinError::BadSignature)?;
    mac.update(format!("{header}.{}", URL_SAFE_NO_PAD.encode(content)).as_bytes());
    // Constant-time comparison.
    mac.verify_slice(&expected).map_err(|_| JoinError::BadSignature)
}

/// Signs `content` as the bootstrap signer does; the inverse of [`verify_detached_jws`].
pub fn sign_detached_jws(content: &str, token: &BootstrapToken) -> String {
    let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"HS256","kid":"{}"}}"#, token.id));
    let mut mac = Hmac::<Sha256>::new_from_slice(token.secret().as_bytes()).expect("HMAC takes keys of any length");
    mac.update(format!("{header}.{}", URL_SAFE_NO_PAD.encode(content)).as_bytes());
    format!("{header}..{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

async fn get_cluster_info(client: &reqwest::Client, url: &str) -> Result<serde_json::Value, JoinError> {
    let resp = client.get(url).send().await.map_err(|source| JoinError::Fetch {
        url: url.to_string(),
        source,
    })?;
    if !resp.status().is_success() {
        return Err(JoinError::Status {
            url: url.to_string(),
            status: resp.status().as_u16(),
        });
    }
    let body = resp.bytes().await.map_err(|source| JoinError::Fetch {
        url: url.to_string(),
        source,
    })?;
    serde_json::from_slice(&body).map_err(|e| JoinError::Malformed {
        url: url.to_string(),
        what: format!("not a ConfigMap: {e}"),
    })
}

/// Discovers and verifies the master's CA; returns it as PEM.
pub async fn discover_ca(api_server: &str, token: &BootstrapToken, ca_cert_hash: &str) -> Result<String, JoinError> {
    let url = format!("{}{CLUSTER_INFO}", api_server.trim_end_matches('/'));
    let malformed = |what: &str| JoinError::Malformed {
        url: url.clone(),
        what: what.to_string(),
    };
    let insecure = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(JoinError::Client)?;
    let cm = get_cluster_info(&insecure, &url).await?;
    let kubeconfig = cm["data"]["kubeconfig"]
        .as_str()
        .ok_or_else(|| malformed("no data.kubeconfig"))?;
    let jws = cm["data"][format!("jws-kubeconfig-{}", token.id)]
        .as_str()
        .ok_or_else(|| JoinError::NotSigned {
            token_id: token.id.clone(),
            others_signed: cm["data"]
                .as_object()
                .is_some_and(|data| data.keys().any(|k| k.starts_with("jws-kubeconfig-"))),
        })?;
    verify_detached_jws(jws, kubeconfig, token)?;
    let parsed: serde_json::Value =
        serde_norway::from_str(kubeconfig).map_err(|e| malformed(&format!("kubeconfig is not YAML: {e}")))?;
    let ca_b64 = parsed["clusters"][0]["cluster"]["certificate-authority-data"]
        .as_str()
        .ok_or_else(|| malformed("kubeconfig has no certificate-authority-data"))?;
    let ca_pem = STANDARD
        .decode(ca_b64)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| malformed("certificate-authority-data is not base64 PEM"))?;
    pki::verify_ca_hash(&ca_pem, ca_cert_hash)?;

    // Now that the CA is trusted, the same object must come back over verified TLS.
    let root = reqwest::Certificate::from_pem(ca_pem.as_bytes()).map_err(JoinError::Client)?;
    let verified = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(root)
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(JoinError::Client)?;
    let again = get_cluster_info(&verified, &url).await?;
    if again["data"]["kubeconfig"].as_str() != Some(kubeconfig) {
        return Err(JoinError::Changed);
    }
    Ok(ca_pem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{Authority, PkiLayout};
    use crate::roles::testutil::{master, serve};

    fn token() -> BootstrapToken {
        "abcdef.0123456789abcdef".parse().unwrap()
    }

    #[test]
    fn jws_round_trips_and_rejects_another_secret_or_content() {
        let t = token();
        let jws = sign_detached_jws("kubeconfig-bytes", &t);
        assert!(jws.contains(".."), "detached form: {jws}");
        verify_detached_jws(&jws, "kubeconfig-bytes", &t).unwrap();
        assert!(verify_detached_jws(&jws, "other-bytes", &t).is_err());
        let other: BootstrapToken = "abcdef.ffffffffffffffff".parse().unwrap();
        assert!(verify_detached_jws(&jws, "kubeconfig-bytes", &other).is_err());
        assert!(verify_detached_jws("garbage", "kubeconfig-bytes", &t).is_err());
    }

    fn publish(www: &std::path::Path, layout: &PkiLayout, token: &BootstrapToken, sign: bool) {
        let ca = std::fs::read_to_string(layout.ca_cert(Authority::Kubernetes)).unwrap();
        let kubeconfig = pki::cluster_info_kubeconfig("https://127.0.0.1:6443", &ca).unwrap();
        let mut data = serde_json::json!({ "kubeconfig": kubeconfig });
        if sign {
            data[format!("jws-kubeconfig-{}", token.id)] = sign_detached_jws(&kubeconfig, token).into();
        }
        let cm = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "data": data});
        let path = www.join(CLUSTER_INFO.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, serde_json::to_vec(&cm).unwrap()).unwrap();
    }

    #[test]
    fn discover_ca_over_loopback_tls_accepts_the_pinned_ca_and_refuses_others() {
        let tmp = tempfile::tempdir().unwrap();
        // `s_server -WWW` serves paths relative to its working directory.
        let layout = master(tmp.path());
        let www = tmp.path().join("www");
        let t = token();
        publish(&www, &layout, &t, true);
        let server = serve(&www, &layout);
        let url = format!("https://127.0.0.1:{}", server.port);
        let ca = std::fs::read_to_string(layout.ca_cert(Authority::Kubernetes)).unwrap();
        let hash = pki::ca_cert_hash(&ca).unwrap();

        let got = crate::roles::testutil::rt()
            .block_on(discover_ca(&url, &t, &hash))
            .unwrap();
        assert_eq!(got, ca);

        let other = tempfile::tempdir().unwrap();
        let other_hash =
            pki::ca_cert_hash(&std::fs::read_to_string(master(other.path()).ca_cert(Authority::Kubernetes)).unwrap())
                .unwrap();
        let err = crate::roles::testutil::rt()
            .block_on(discover_ca(&url, &t, &other_hash))
            .unwrap_err();
        assert!(matches!(err, JoinError::Pki(PkiError::CaHashMismatch { .. })), "{err}");

        let wrong_secret: BootstrapToken = "abcdef.ffffffffffffffff".parse().unwrap();
        let err = crate::roles::testutil::rt()
            .block_on(discover_ca(&url, &wrong_secret, &hash))
            .unwrap_err();
        assert!(matches!(err, JoinError::BadSignature), "{err}");

        let unknown_id: BootstrapToken = "zzzzzz.0123456789abcdef".parse().unwrap();
        let err = crate::roles::testutil::rt()
            .block_on(discover_ca(&url, &unknown_id, &hash))
            .unwrap_err();
        assert!(matches!(err, JoinError::NotSigned { .. }), "{err}");
    }

    fn quick() -> Patience {
        Patience {
            timeout: Duration::from_secs(30),
            new_token_grace: Duration::from_millis(800),
            interval: Duration::from_millis(100),
        }
    }

    #[test]
    fn a_worker_waits_for_the_signer_but_not_for_a_token_the_master_does_not_know() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = master(tmp.path());
        let www = tmp.path().join("www");
        let t = token();
        let ca = std::fs::read_to_string(layout.ca_cert(Authority::Kubernetes)).unwrap();
        let hash = pki::ca_cert_hash(&ca).unwrap();
        // The master is up but its controller-manager has not signed cluster-info yet.
        publish(&www, &layout, &t, false);
        let server = serve(&www, &layout);
        let url = format!("https://127.0.0.1:{}", server.port);
        let signer = {
            let (www, layout, t) = (www.clone(), layout.clone(), t.clone());
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(700));
                publish(&www, &layout, &t, true);
            })
        };
        let mut reasons = Vec::new();
        let got = crate::roles::testutil::rt()
            .block_on(discover_ca_waiting(&url, &t, &hash, quick(), &mut |e| {
                reasons.push(e.to_string())
            }))
            .unwrap();
        signer.join().unwrap();
        assert_eq!(got, ca);
        assert_eq!(reasons.len(), 1, "each reason is told once: {reasons:?}");
        assert!(reasons[0].contains("no token is signed yet"), "{reasons:?}");

        // The signer signs `t`: a token it does not sign is not worth five minutes.
        let unknown: BootstrapToken = "zzzzzz.0123456789abcdef".parse().unwrap();
        let begun = std::time::Instant::now();
        let err = crate::roles::testutil::rt()
            .block_on(discover_ca_waiting(&url, &unknown, &hash, quick(), &mut |_| {}))
            .unwrap_err();
        assert!(
            matches!(
                err,
                JoinError::NotSigned {
                    others_signed: true,
                    ..
                }
            ),
            "{}",
            crate::base::error::chain(&err)
        );
        assert!(err.to_string().contains("check --token"), "{err}");
        assert!(begun.elapsed() < Duration::from_secs(5), "{:?}", begun.elapsed());

        // A wrong secret is refused at once.
        let wrong_secret: BootstrapToken = "abcdef.ffffffffffffffff".parse().unwrap();
        let err = crate::roles::testutil::rt()
            .block_on(discover_ca_waiting(&url, &wrong_secret, &hash, quick(), &mut |_| {}))
            .unwrap_err();
        assert!(matches!(err, JoinError::BadSignature), "{err}");
    }

    #[test]
    fn a_worker_gives_up_on_an_unreachable_master_naming_why() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let patience = Patience {
            timeout: Duration::from_millis(600),
            ..quick()
        };
        let err = crate::roles::testutil::rt()
            .block_on(discover_ca_waiting(
                &format!("https://127.0.0.1:{port}"),
                &token(),
                "sha256:00",
                patience,
                &mut |_| {},
            ))
            .unwrap_err();
        let chain = crate::base::error::chain(&err);
        assert!(matches!(err, JoinError::GaveUp { .. }), "{chain}");
        assert!(
            chain.contains("gave up after waiting") && chain.contains("fetch cluster-info"),
            "{chain}"
        );
    }
}
