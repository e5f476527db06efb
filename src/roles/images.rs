//! Image references per family and version. vendor-images.md documents each one.

use super::config::NodeConfig;
use super::version::Family;

/// Third-party kubelet image for the modern family: upstream publishes the kubelet only as a
/// binary since hyperkube ended (v1.18). Sidero Labs builds one per Kubernetes patch release
/// for Talos (amd64 and arm64), with the kubelet at `/usr/local/bin/kubelet` and the mount,
/// iptables and filesystem tools it execs.
pub const MODERN_KUBELET_REPO: &str = "ghcr.io/siderolabs/kubelet";
/// Flannel's CNI plugin (copied into /opt/cni/bin). Its release train is separate from flanneld's.
pub const FLANNEL_CNI_PLUGIN_IMAGE: &str = "docker.io/flannel/flannel-cni-plugin:v1.6.2-flannel1";

/// The role's images, resolved for one configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Images {
    pub etcd: String,
    pub kubelet: String,
    pub apiserver: String,
    pub controller_manager: String,
    pub scheduler: String,
    pub proxy: String,
    /// Image holding `kubectl`, for applying the bootstrap objects.
    pub kubectl: String,
    pub flannel: String,
}

fn hyperkube(cfg: &NodeConfig) -> String {
    format!("registry.k8s.io/hyperkube-{}:{}", cfg.arch, cfg.k8s_version)
}

/// etcd tags with a `-N` build suffix live in the multi-arch `etcd` repository; older
/// tags in the per-arch `etcd-ARCH` one (kube-deploy's `gcr.io/google_containers/etcd-ARCH`).
pub fn etcd_image(version: &str, arch: &str) -> String {
    if version.contains('-') {
        format!("registry.k8s.io/etcd:{version}")
    } else {
        format!("registry.k8s.io/etcd-{arch}:{version}")
    }
}

/// flannel moved from `quay.io/coreos/flannel:vX-ARCH` to the multi-arch
/// `docker.io/flannel/flannel:vX` with v0.17.
pub fn flannel_image(version: &str, arch: &str) -> String {
    let minor = version
        .strip_prefix("v0.")
        .and_then(|r| r.split('.').next())
        .and_then(|m| m.parse::<u32>().ok());
    match minor {
        Some(m) if m < 17 => format!("quay.io/coreos/flannel:{version}-{arch}"),
        _ => format!("docker.io/flannel/flannel:{version}"),
    }
}

pub fn images(cfg: &NodeConfig) -> Images {
    let v = cfg.k8s_version;
    let etcd = etcd_image(&cfg.etcd_version, &cfg.arch);
    let flannel = flannel_image(&cfg.flannel_version, &cfg.arch);
    match cfg.family {
        Family::Modern => {
            let split = |name: &str| format!("registry.k8s.io/{name}:{v}");
            Images {
                etcd,
                kubelet: format!("{MODERN_KUBELET_REPO}:{v}"),
                apiserver: split("kube-apiserver"),
                controller_manager: split("kube-controller-manager"),
                scheduler: split("kube-scheduler"),
                proxy: split("kube-proxy"),
                kubectl: split("kubectl"),
                flannel,
            }
        }
        Family::Hyperkube => {
            let h = hyperkube(cfg);
            Images {
                etcd,
                kubelet: h.clone(),
                apiserver: h.clone(),
                controller_manager: h.clone(),
                scheduler: h.clone(),
                proxy: h.clone(),
                kubectl: h,
                flannel,
            }
        }
    }
}

/// The argv prefix that starts component `name` (`kube-apiserver`, `kubelet`, …) in the family's image.
pub fn component_command(cfg: &NodeConfig, name: &str) -> Vec<String> {
    match cfg.family {
        Family::Modern if name == "kubelet" => vec!["/usr/local/bin/kubelet".into()],
        Family::Modern => vec![name.to_string()],
        Family::Hyperkube => {
            // hyperkube's own names up to v1.16; v1.17+ is a script that takes only the kube-* names.
            let old = match name {
                "kube-apiserver" => "apiserver",
                "kube-controller-manager" => "controller-manager",
                "kube-scheduler" => "scheduler",
                "kube-proxy" => "proxy",
                other => other,
            };
            let sub = if cfg.k8s_version.at_least(1, 17) { name } else { old };
            vec!["/hyperkube".into(), sub.into()]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_and_flannel_images_follow_their_repository_moves() {
        assert_eq!(etcd_image("3.0.4", "amd64"), "registry.k8s.io/etcd-amd64:3.0.4");
        assert_eq!(etcd_image("3.6.4-0", "arm64"), "registry.k8s.io/etcd:3.6.4-0");
        assert_eq!(flannel_image("v0.6.1", "arm"), "quay.io/coreos/flannel:v0.6.1-arm");
        assert_eq!(flannel_image("v0.26.7", "amd64"), "docker.io/flannel/flannel:v0.26.7");
    }
}
