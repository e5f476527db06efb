//! `run --detach --wait-ready`: poll the apiserver, as the admin, until this node's
//! `Ready` condition is `True`.

use std::time::{Duration, Instant};

use crate::pki::{Authority, PkiLayout};

#[derive(Debug, thiserror::Error)]
pub enum ReadyError {
    #[error("read {}", path.display())]
    Read {
        path: std::path::PathBuf,
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

/// What one poll saw, for the timeout message.
fn describe(node: &serde_json::Value) -> String {
    let conditions = node["status"]["conditions"].as_array().cloned().unwrap_or_default();
    match conditions.iter().find(|c| c["type"] == "Ready") {
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

fn is_ready(node: &serde_json::Value) -> bool {
    node["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// Waits until node `node` is Ready on `api_server`, authenticating with the admin client
/// certificate and trusting only the cluster CA.
pub async fn wait_node_ready(
    layout: &PkiLayout,
    api_server: &str,
    node: &str,
    timeout: Duration,
    interval: Duration,
) -> Result<(), ReadyError> {
    let read = |path: std::path::PathBuf| std::fs::read(&path).map_err(|source| ReadyError::Read { path, source });
    let ca = read(layout.ca_cert(Authority::Kubernetes))?;
    let mut identity = read(layout.cert("admin"))?;
    identity.extend(read(layout.key("admin"))?);
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).map_err(ReadyError::Client)?)
        .identity(reqwest::Identity::from_pem(&identity).map_err(ReadyError::Client)?)
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(ReadyError::Client)?;
    let url = format!("{}/api/v1/nodes/{node}", api_server.trim_end_matches('/'));
    let start = Instant::now();
    loop {
        let last: String;
        match client.get(&url).send().await {
            Ok(resp) if resp.status().is_success() => {
                let body = resp.bytes().await.map_err(|e| e.to_string());
                match body.and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).map_err(|e| e.to_string())) {
                    Ok(v) if is_ready(&v) => return Ok(()),
                    Ok(v) => last = describe(&v),
                    Err(e) => last = format!("unreadable answer: {e}"),
                }
            }
            Ok(resp) if resp.status().as_u16() == 404 => last = "the node has not registered yet".into(),
            Ok(resp) => last = format!("the apiserver answered {}", resp.status()),
            Err(e) => last = format!("the apiserver is not reachable: {e}"),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn node(status: &str) -> serde_json::Value {
        serde_json::json!({"status": {"conditions": [
            {"type": "MemoryPressure", "status": "False"},
            {"type": "Ready", "status": status, "reason": "KubeletNotReady", "message": "container runtime network not ready"},
        ]}})
    }

    #[test]
    fn ready_condition_is_read_from_the_node_status() {
        assert!(is_ready(&node("True")));
        assert!(!is_ready(&node("False")));
        assert!(!is_ready(&serde_json::json!({})));
        assert_eq!(
            describe(&node("False")),
            "Ready=False (container runtime network not ready)"
        );
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
        let wait = |timeout_ms| {
            crate::roles::testutil::rt().block_on(wait_node_ready(
                &layout,
                &api,
                "127.0.0.1",
                Duration::from_millis(timeout_ms),
                Duration::from_millis(100),
            ))
        };
        let err = wait(300).unwrap_err().to_string();
        assert!(
            err.contains("Ready=False (container runtime network not ready)"),
            "{err}"
        );
        std::fs::write(&path, node("True").to_string()).unwrap();
        wait(5000).unwrap();
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
        let err = crate::roles::testutil::rt()
            .block_on(wait_node_ready(
                &layout,
                &format!("https://127.0.0.1:{port}"),
                "127.0.0.1",
                Duration::from_millis(300),
                Duration::from_millis(100),
            ))
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("not Ready") && msg.contains("not reachable"), "{msg}");
    }
}
