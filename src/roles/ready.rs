//! `run --detach --wait-ready`: poll the apiserver until this node's `Ready` condition is
//! `True` and was reported by the kubelet started now (a `Ready=True` left in etcd by the
//! previous run does not count).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::KubeDirs;
use crate::pki::{Authority, PkiLayout};

#[derive(Debug, thiserror::Error)]
pub enum ReadyError {
    #[error("read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("build the apiserver client")]
    Client(#[source] reqwest::Error),
    #[error("node {node} was not Ready after {}s; last seen: {last}", timeout.as_secs())]
    Timeout {
        node: String,
        timeout: Duration,
        last: String,
    },
}

/// Whom the poll authenticates as: PEM files, trusted by the cluster CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The files appear later (a worker's kubelet writes its certificate after TLS
    /// bootstrapping): absent files are waited for, not an error.
    pub eventually: bool,
}

impl Credentials {
    /// The master's admin client certificate.
    pub fn admin(layout: &PkiLayout) -> Self {
        Self {
            ca: layout.ca_cert(Authority::Kubernetes),
            cert: layout.cert("admin"),
            key: layout.key("admin"),
            eventually: false,
        }
    }

    /// A worker's own node credential: the client certificate its kubelet got by TLS
    /// bootstrapping (certificate and key in one file, `--cert-dir`). The Node authorizer
    /// lets a node read its own Node object; a worker has no admin credential.
    pub fn kubelet(layout: &PkiLayout, dirs: &KubeDirs) -> Self {
        let pem = dirs.kubelet_client_cert();
        Self {
            ca: layout.ca_cert(Authority::Kubernetes),
            cert: pem.clone(),
            key: pem,
            eventually: true,
        }
    }

    /// The HTTP client, or `None` while an `eventually` file is still missing.
    fn client(&self) -> Result<Option<reqwest::Client>, ReadyError> {
        let read = |path: &Path| std::fs::read(path);
        let files = (|| {
            Ok::<_, (PathBuf, std::io::Error)>((
                read(&self.ca).map_err(|e| (self.ca.clone(), e))?,
                read(&self.cert).map_err(|e| (self.cert.clone(), e))?,
                read(&self.key).map_err(|e| (self.key.clone(), e))?,
            ))
        })();
        let (ca, mut identity, key) = match files {
            Ok(f) => f,
            Err((_, e)) if self.eventually && e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err((path, source)) => return Err(ReadyError::Read { path, source }),
        };
        if self.key != self.cert {
            identity.extend(key);
        }
        reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).map_err(ReadyError::Client)?)
            .identity(reqwest::Identity::from_pem(&identity).map_err(ReadyError::Client)?)
            .timeout(Duration::from_secs(5))
            .build()
            .map(Some)
            .map_err(ReadyError::Client)
    }
}

/// What one poll saw, for the timeout message.
fn describe(node: &serde_json::Value, since: SystemTime) -> String {
    match ready_condition(node) {
        Some(c) if c["status"] == "True" && !fresh(c, since) => {
            "Ready=True, but reported before this run's kubelet started (a stale status)".into()
        }
        Some(c) => format!(
            "Ready={} ({})",
            c["status"].as_str().unwrap_or("?"),
            c["message"]
                .as_str()
                .or(c["reason"].as_str())
                .unwrap_or("no reason given")
        ),
        None => "no Ready condition yet".into(),
    }
}

fn ready_condition(node: &serde_json::Value) -> Option<&serde_json::Value> {
    node["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
}

/// Whether the kubelet posted the condition at or after `since` (its heartbeat has
/// second precision, so `since` is compared truncated to the second). The kubelet runs on
/// this host: one clock.
fn fresh(condition: &serde_json::Value, since: SystemTime) -> bool {
    let since = since
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| Duration::from_secs(d.as_secs()))
        .unwrap_or_default();
    condition["lastHeartbeatTime"]
        .as_str()
        .and_then(|t| humantime::parse_rfc3339(t).ok())
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .is_some_and(|t| t >= since)
}

fn is_ready(node: &serde_json::Value, since: SystemTime) -> bool {
    ready_condition(node).is_some_and(|c| c["status"] == "True" && fresh(c, since))
}

/// Waits until node `node` is Ready on `api_server` with a status reported at or after
/// `since`, trusting only the cluster CA.
pub async fn wait_node_ready(
    creds: &Credentials,
    api_server: &str,
    node: &str,
    since: SystemTime,
    timeout: Duration,
    interval: Duration,
) -> Result<(), ReadyError> {
    let url = format!("{}/api/v1/nodes/{node}", api_server.trim_end_matches('/'));
    let start = Instant::now();
    let mut client = None;
    loop {
        if client.is_none() {
            client = creds.client()?;
        }
        let last: String = match &client {
            None => format!(
                "no client certificate yet ({}): the kubelet has not finished TLS bootstrapping",
                creds.cert.display()
            ),
            Some(client) => poll(client, &url, since).await,
        };
        if last.is_empty() {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            return Err(ReadyError::Timeout {
                node: node.to_string(),
                timeout,
                last,
            });
        }
        tokio::time::sleep(interval).await;
    }
}

/// One GET of the Node: empty when Ready, else what was seen.
async fn poll(client: &reqwest::Client, url: &str, since: SystemTime) -> String {
    match client.get(url).send().await {
        Ok(resp) if resp.status().is_success() => {
            let body = resp.bytes().await.map_err(|e| e.to_string());
            match body.and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).map_err(|e| e.to_string())) {
                Ok(v) if is_ready(&v, since) => String::new(),
                Ok(v) => describe(&v, since),
                Err(e) => format!("unreadable answer: {e}"),
            }
        }
        Ok(resp) if resp.status().as_u16() == 404 => "the node has not registered yet".into(),
        Ok(resp) => format!("the apiserver answered {}", resp.status()),
        Err(e) => format!("the apiserver is not reachable: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEARTBEAT: &str = "2026-11-28T07:00:00Z";

    fn at(rfc3339: &str) -> SystemTime {
        humantime::parse_rfc3339(rfc3339).unwrap()
    }

    fn node(status: &str) -> serde_json::Value {
        serde_json::json!({"status": {"conditions": [
            {"type": "MemoryPressure", "status": "False", "lastHeartbeatTime": HEARTBEAT},
            {"type": "Ready", "status": status, "reason": "KubeletNotReady",
             "message": "container runtime network not ready", "lastHeartbeatTime": HEARTBEAT},
        ]}})
    }

    #[test]
    fn ready_condition_is_read_from_the_node_status() {
        let since = at(HEARTBEAT);
        assert!(is_ready(&node("True"), since));
        assert!(!is_ready(&node("False"), since));
        assert!(!is_ready(&serde_json::json!({}), since));
        assert_eq!(
            describe(&node("False"), since),
            "Ready=False (container runtime network not ready)"
        );
    }

    #[test]
    fn a_ready_status_reported_before_the_run_started_is_stale() {
        // A node restarted after `down` keeps its last status in etcd until its new kubelet
        // reports: that Ready=True says nothing about the new kubelet.
        let later = at("2026-11-28T07:00:01Z");
        assert!(!is_ready(&node("True"), later));
        assert!(describe(&node("True"), later).contains("stale"));
        // Sub-second start times compare at the heartbeat's precision.
        assert!(is_ready(&node("True"), at("2026-11-28T07:00:00.900Z")));
    }

    fn wait(creds: &Credentials, api: &str, timeout_ms: u64) -> Result<(), ReadyError> {
        crate::roles::testutil::rt().block_on(wait_node_ready(
            creds,
            api,
            "127.0.0.1",
            at(HEARTBEAT),
            Duration::from_millis(timeout_ms),
            Duration::from_millis(100),
        ))
    }

    #[test]
    fn wait_node_ready_over_loopback_tls_returns_once_the_node_is_ready() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = crate::roles::testutil::master(tmp.path());
        let www = tmp.path().join("www");
        let path = www.join("api/v1/nodes/127.0.0.1");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, node("False").to_string()).unwrap();
        let server = crate::roles::testutil::serve(&www, &layout);
        let api = format!("https://127.0.0.1:{}", server.port);
        let creds = Credentials::admin(&layout);
        let err = wait(&creds, &api, 300).unwrap_err().to_string();
        assert!(
            err.contains("Ready=False (container runtime network not ready)"),
            "{err}"
        );
        std::fs::write(&path, node("True").to_string()).unwrap();
        wait(&creds, &api, 5000).unwrap();
    }

    #[test]
    fn a_worker_waits_for_its_kubelets_certificate_then_uses_it() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = crate::roles::testutil::master(tmp.path());
        let dirs = KubeDirs {
            kubelet: tmp.path().join("kubelet"),
            ..KubeDirs::default()
        };
        let www = tmp.path().join("www");
        let path = www.join("api/v1/nodes/127.0.0.1");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, node("True").to_string()).unwrap();
        let server = crate::roles::testutil::serve(&www, &layout);
        let api = format!("https://127.0.0.1:{}", server.port);
        let creds = Credentials::kubelet(&layout, &dirs);
        let err = wait(&creds, &api, 300).unwrap_err().to_string();
        assert!(err.contains("TLS bootstrapping"), "{err}");
        // What the kubelet writes after bootstrapping: certificate and key in one file.
        let mut pem = std::fs::read(layout.cert("kubelet")).unwrap();
        pem.extend(std::fs::read(layout.key("kubelet")).unwrap());
        let cert = dirs.kubelet_client_cert();
        std::fs::create_dir_all(cert.parent().unwrap()).unwrap();
        std::fs::write(&cert, pem).unwrap();
        wait(&creds, &api, 5000).unwrap();
    }

    #[test]
    fn wait_node_ready_times_out_naming_what_it_last_saw() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = crate::roles::testutil::master(tmp.path());
        // A closed loopback port: nothing answers.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = wait(&Credentials::admin(&layout), &format!("https://127.0.0.1:{port}"), 300).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("not Ready") && msg.contains("not reachable"), "{msg}");
    }
}
