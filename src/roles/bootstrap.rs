//! The cluster objects a master needs for workers to join, as kubeadm sets them up: the
//! bootstrap token Secret, the public `cluster-info` ConfigMap, RBAC for node bootstrap,
//! CSR auto-approval and node proxies. kboot applies them with `kubectl apply` in a
//! one-shot container (the job kube-deploy left to the addon manager).

use std::path::Path;

use serde_json::{json, Value};

use super::config::NodeConfig;
use super::images::{component_command, Images};
use super::render::{objects_yaml, rendered_file};
use super::version::Family;
use super::{GeneratedFile, RoleError};
use crate::pki::{self, Authority, BootstrapToken, NodeIdentity, PkiError, PkiLayout, BOOTSTRAP_GROUP};
use crate::plan::{PlanFile, RestartPolicy, Service, Volume};
use crate::state::Paths;

const RBAC_FILE: &str = "00-rbac.yaml";
const TOKEN_FILE: &str = "10-bootstrap-token.yaml";
const CLUSTER_INFO_FILE: &str = "20-cluster-info.yaml";

fn binding(name: &str, role: &str, group: &str) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group}],
    })
}

/// RBAC the join needs. Static, so it is a plan file.
pub fn rbac_file(paths: &Paths) -> Result<PlanFile, RoleError> {
    let objects = [
        // Bootstrap tokens may create CSRs …
        binding("kboot:kubelet-bootstrap", "system:node-bootstrapper", BOOTSTRAP_GROUP),
        // … which are approved automatically for new node client certificates …
        binding(
            "kboot:node-autoapprove-bootstrap",
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            BOOTSTRAP_GROUP,
        ),
        // … and for their renewals.
        binding(
            "kboot:node-autoapprove-certificate-rotation",
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            "system:nodes",
        ),
        // Workers run kube-proxy with their node credential.
        binding("kboot:node-proxier", "system:node-proxier", "system:nodes"),
        // Anyone may read cluster-info: it holds only the CA and the server address.
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "kboot:bootstrap-signer-clusterinfo", "namespace": "kube-public"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["cluster-info"], "verbs": ["get"]}],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "kboot:bootstrap-signer-clusterinfo", "namespace": "kube-public"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "kboot:bootstrap-signer-clusterinfo"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:anonymous"}],
        }),
    ];
    rendered_file(paths.bootstrap_objects().join(RBAC_FILE), objects_yaml(&objects))
}

/// The files `run` writes from the PKI (the token is secret; cluster-info embeds the CA).
pub fn generated_files(paths: &Paths) -> Vec<GeneratedFile> {
    let dir = paths.bootstrap_objects();
    vec![
        GeneratedFile {
            path: dir.join(TOKEN_FILE),
            mode: "0600".into(),
            what: "Secret kube-system/bootstrap-token-<id> for the bootstrap token".into(),
        },
        GeneratedFile {
            path: dir.join(CLUSTER_INFO_FILE),
            mode: "0644".into(),
            what: "ConfigMap kube-public/cluster-info: the CA and the apiserver address".into(),
        },
    ]
}

/// The one-shot container that applies everything in the bootstrap directory, retried
/// until the apiserver answers.
pub fn apply_service(cfg: &NodeConfig, paths: &Paths, admin_kubeconfig: &Path, images: &Images) -> Service {
    let dir = paths.bootstrap_objects();
    let mut args = match cfg.family {
        Family::Modern => vec!["kubectl".to_string()],
        Family::Hyperkube => component_command(cfg, "kubectl"),
    };
    args.extend([
        format!("--kubeconfig={}", admin_kubeconfig.display()),
        "apply".into(),
        "-f".into(),
        dir.display().to_string(),
    ]);
    Service {
        name: "kube-bootstrap".into(),
        image: images.kubectl.clone(),
        entrypoint: Some(args),
        command: Some(Vec::new()),
        volumes: vec![Volume {
            source: paths.pki(),
            target: paths.pki(),
            read_only: true,
            propagation: Default::default(),
        }],
        network_host: true,
        restart: RestartPolicy::OnFailure { max_retries: None },
        depends_on: vec!["kubelet".into()],
        ..Service::default()
    }
}

/// Writes the token Secret and cluster-info from the PKI. Run after `pki::ensure_master`.
pub fn write_generated(paths: &Paths, layout: &PkiLayout, id: &NodeIdentity) -> Result<(), PkiError> {
    let token = pki::read_bootstrap_token(layout)?;
    let ca_path = layout.ca_cert(Authority::Kubernetes);
    let ca = std::fs::read_to_string(&ca_path).map_err(|source| PkiError::Read { path: ca_path, source })?;
    let dir = paths.bootstrap_objects();
    let yaml = |what: &str, v: &Value| {
        serde_norway::to_string(v).map_err(|source| PkiError::EncodeYaml {
            what: what.to_string(),
            source,
        })
    };
    let secret = yaml(TOKEN_FILE, &token_secret(&token))?;
    write(&dir.join(TOKEN_FILE), &secret, 0o600)?;
    let kubeconfig = pki::cluster_info_kubeconfig(&id.api_server, &ca)?;
    let cm = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cluster-info", "namespace": "kube-public"},
        "data": {"kubeconfig": kubeconfig},
    });
    write(&dir.join(CLUSTER_INFO_FILE), &yaml(CLUSTER_INFO_FILE, &cm)?, 0o644)
}

fn write(path: &Path, text: &str, mode: u32) -> Result<(), PkiError> {
    pki::write_atomic(path, text.as_bytes(), mode).map_err(|source| PkiError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// The bootstrap token Secret, in the format the apiserver's token authenticator reads.
pub fn token_secret(token: &BootstrapToken) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "bootstrap.kubernetes.io/token",
        "metadata": {"name": format!("bootstrap-token-{}", token.id), "namespace": "kube-system"},
        "stringData": {
            "description": "kboot: workers join with this token (kboot run worker --token)",
            "token-id": token.id,
            "token-secret": token.secret(),
            "usage-bootstrap-authentication": "true",
            "usage-bootstrap-signing": "true",
            "auth-extra-groups": BOOTSTRAP_GROUP,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_secret_has_the_fields_the_apiserver_authenticator_reads() {
        let t: BootstrapToken = "abcdef.0123456789abcdef".parse().unwrap();
        let s = token_secret(&t);
        assert_eq!(s["metadata"]["name"], "bootstrap-token-abcdef");
        assert_eq!(s["type"], "bootstrap.kubernetes.io/token");
        assert_eq!(s["stringData"]["token-secret"], "0123456789abcdef");
        assert_eq!(s["stringData"]["auth-extra-groups"], BOOTSTRAP_GROUP);
    }

    #[test]
    fn rbac_binds_bootstrap_group_to_csr_creation_and_auto_approval() {
        let f = rbac_file(&Paths::under("/x")).unwrap();
        for needle in [
            "system:node-bootstrapper",
            "certificatesigningrequests:nodeclient",
            "certificatesigningrequests:selfnodeclient",
            "system:node-proxier",
            BOOTSTRAP_GROUP,
            "cluster-info",
        ] {
            assert!(f.content.contains(needle), "missing {needle}:\n{}", f.content);
        }
    }
}
