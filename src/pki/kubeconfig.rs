//! Kubeconfig files: self-contained (certificates embedded), so `kboot kubeconfig` output
//! can be copied to another machine as is.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

use super::{BootstrapToken, PkiError};

const CLUSTER: &str = "kubernetes";

fn to_yaml(what: &str, v: &Value) -> Result<String, PkiError> {
    serde_norway::to_string(v).map_err(|source| PkiError::EncodeYaml {
        what: what.to_string(),
        source,
    })
}

fn cluster(server: &str, ca_pem: &str) -> Value {
    json!([{
        "name": CLUSTER,
        "cluster": {
            "certificate-authority-data": STANDARD.encode(ca_pem),
            "server": server,
        },
    }])
}

fn config(server: &str, ca_pem: &str, user: &str, credentials: Value) -> Value {
    let context = format!("{user}@{CLUSTER}");
    json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": cluster(server, ca_pem),
        "contexts": [{"name": context, "context": {"cluster": CLUSTER, "user": user}}],
        "current-context": context,
        "preferences": {},
        "users": [{"name": user, "user": credentials}],
    })
}

/// A kubeconfig authenticating with a client certificate.
pub fn client_kubeconfig(
    server: &str,
    ca_pem: &str,
    user: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<String, PkiError> {
    let creds = json!({
        "client-certificate-data": STANDARD.encode(cert_pem),
        "client-key-data": STANDARD.encode(key_pem),
    });
    to_yaml(user, &config(server, ca_pem, user, creds))
}

/// A worker kubelet's bootstrap kubeconfig: the bootstrap token, good only for asking
/// for a node certificate (TLS bootstrapping).
pub fn bootstrap_kubeconfig(server: &str, ca_pem: &str, token: &BootstrapToken) -> Result<String, PkiError> {
    let creds = json!({ "token": token.expose() });
    to_yaml(
        "bootstrap kubeconfig",
        &config(server, ca_pem, "kubelet-bootstrap", creds),
    )
}

/// The `kubeconfig` key of the `cluster-info` ConfigMap in `kube-public`: only the cluster,
/// no user. The controller-manager's bootstrap signer adds the token signatures.
pub fn cluster_info_kubeconfig(server: &str, ca_pem: &str) -> Result<String, PkiError> {
    let v = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": cluster(server, ca_pem),
        "contexts": [],
        "current-context": "",
        "preferences": {},
        "users": [],
    });
    to_yaml("cluster-info kubeconfig", &v)
}
