//! The cluster DNS add-on: CoreDNS answering on the kubelets' cluster DNS address
//! ([`CLUSTER_DNS`]) for [`CLUSTER_DOMAIN`], as kubeadm deploys it. kube-deploy's addon
//! manager deployed kube-dns; kboot's `kube-bootstrap` applies these objects with the rest.

use serde_json::{json, Value};

use super::config::{NodeConfig, CLUSTER_DNS, CLUSTER_DOMAIN};
use super::render::{objects_yaml, rendered_file};
use super::version::Family;
use super::RoleError;
use crate::plan::PlanFile;
use crate::state::Paths;

/// kubeadm's CoreDNS for Kubernetes v1.34 (the image's upstream name; see vendor-images.md).
pub const COREDNS_IMAGE: &str = "registry.k8s.io/coredns/coredns:v1.12.1";
const FILE: &str = "30-coredns.yaml";

/// kubeadm's Corefile without the `loop` plugin: its start-up probe sends a query to the
/// upstream resolver even when no pod asks for an outside name. Names outside the cluster
/// go to the resolvers of the node's `/etc/resolv.conf`.
fn corefile() -> String {
    format!(
        ".:53 {{
    errors
    health {{
       lameduck 5s
    }}
    ready
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }}
    prometheus :9153
    forward . /etc/resolv.conf {{
       max_concurrent 1000
    }}
    cache 30
    reload
    loadbalance
}}
"
    )
}

fn objects() -> Vec<Value> {
    let ns = "kube-system";
    let labels = json!({"k8s-app": "kube-dns"});
    let probe = |path: &str, port: u16| json!({"httpGet": {"path": path, "port": port, "scheme": "HTTP"}});
    vec![
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "coredns", "namespace": ns}}),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "system:coredns"},
            "rules": [
                {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"], "verbs": ["list", "watch"]},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
            ],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:coredns"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:coredns"},
            "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": ns}],
        }),
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "coredns", "namespace": ns},
            "data": {"Corefile": corefile()},
        }),
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "coredns", "namespace": ns, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "priorityClassName": "system-cluster-critical",
                        "serviceAccountName": "coredns",
                        "nodeSelector": {"kubernetes.io/os": "linux"},
                        "tolerations": [
                            {"key": "CriticalAddonsOnly", "operator": "Exists"},
                            {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"},
                        ],
                        // CoreDNS itself resolves outside names through the node's resolvers.
                        "dnsPolicy": "Default",
                        "containers": [{
                            "name": "coredns",
                            "image": COREDNS_IMAGE,
                            "args": ["-conf", "/etc/coredns/Corefile"],
                            "ports": [
                                {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                                {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                                {"name": "metrics", "containerPort": 9153, "protocol": "TCP"},
                            ],
                            "volumeMounts": [{"name": "config-volume", "mountPath": "/etc/coredns", "readOnly": true}],
                            "livenessProbe": probe("/health", 8080),
                            "readinessProbe": probe("/ready", 8181),
                            "resources": {"limits": {"memory": "170Mi"}, "requests": {"cpu": "100m", "memory": "70Mi"}},
                        }],
                        "volumes": [{
                            "name": "config-volume",
                            "configMap": {"name": "coredns", "items": [{"key": "Corefile", "path": "Corefile"}]},
                        }],
                    },
                },
            },
        }),
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "kube-dns",
                "namespace": ns,
                "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"},
            },
            "spec": {
                "selector": labels,
                "clusterIP": CLUSTER_DNS.to_string(),
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                    {"name": "metrics", "port": 9153, "protocol": "TCP"},
                ],
            },
        }),
    ]
}

/// The add-on's objects as a file `kube-bootstrap` applies; None where kboot deploys no DNS
/// (the hyperkube family: its clusters predate CoreDNS as the default).
pub fn addon_file(cfg: &NodeConfig, paths: &Paths) -> Option<Result<PlanFile, RoleError>> {
    (cfg.family == Family::Modern)
        .then(|| rendered_file(paths.bootstrap_objects().join(FILE), objects_yaml(&objects())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roles::config::{tests::config, Key, Role};

    fn cfg(pairs: &[(Key, &str)]) -> NodeConfig {
        config(Role::Master, pairs)
    }

    #[test]
    fn coredns_serves_the_kubelets_cluster_dns_address_and_domain() {
        let paths = Paths::under("/tmp/kb");
        let file = addon_file(&cfg(&[]), &paths).unwrap().unwrap();
        assert_eq!(file.path, paths.bootstrap_objects().join(FILE));
        let docs: Vec<serde_norway::Value> = serde_norway::Deserializer::from_str(&file.content)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
        let kind = |k: &str| docs.iter().find(|d| d["kind"] == k).unwrap().clone();
        assert_eq!(kind("Service")["spec"]["clusterIP"], CLUSTER_DNS.to_string().as_str());
        let corefile = kind("ConfigMap")["data"]["Corefile"].as_str().unwrap().to_string();
        assert!(
            corefile.contains(&format!("kubernetes {CLUSTER_DOMAIN} ")),
            "{corefile}"
        );
        assert!(!corefile.contains("loop"), "no probe to the upstream resolver");
        let pod = &kind("Deployment")["spec"]["template"]["spec"];
        assert_eq!(pod["containers"][0]["image"], COREDNS_IMAGE);
        assert_eq!(pod["serviceAccountName"], "coredns");
    }

    #[test]
    fn the_hyperkube_family_gets_no_dns_addon() {
        let c = cfg(&[(Key::K8sVersion, "v1.18.20")]);
        assert!(addon_file(&c, &Paths::under("/tmp/kb")).is_none());
    }
}
