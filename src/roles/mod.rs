//! The built-in node roles, `master` and `worker`: kube-deploy's docker-multinode topology
//! as a [`Plan`] kboot's supervisor runs, plus what has to exist on the host first (PKI,
//! files). [`build`] is pure: `kboot plan` prints its result and `kboot run` executes it.

pub mod bootstrap;
pub mod cleanup;
pub mod components;
pub mod config;
pub mod dns;
pub mod images;
pub mod join;
pub mod netdetect;
pub mod ready;
mod render;
#[cfg(test)]
mod testutil;
pub mod version;

use std::path::PathBuf;

use serde::Serialize;

pub use cleanup::{down_role, down_role_host, down_role_if_any, DownReport};
pub use config::{NodeConfig, Role, CLUSTER_DNS, CLUSTER_DOMAIN, KUBERNETES_SERVICE_IP, SERVICE_CIDR};
pub use version::{Family, KubeVersion};

use crate::pki::{self, LeafSpec, NodeIdentity, PkiLayout};
use crate::plan::Plan;
use crate::state::Paths;

/// Kubernetes' own host directories. Fixed by Kubernetes, not by kboot, but kept in one
/// value so tests can move them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeDirs {
    pub kubelet: PathBuf,
    pub etc: PathBuf,
    pub cni_conf: PathBuf,
    pub cni_bin: PathBuf,
    pub flannel_run: PathBuf,
    /// The kubelet's pod log directories (`/var/log/pods`) and their `/var/log/containers`
    /// links: fixed in the kubelet.
    pub pod_logs: PathBuf,
    pub container_logs: PathBuf,
}

impl Default for KubeDirs {
    fn default() -> Self {
        Self {
            kubelet: "/var/lib/kubelet".into(),
            etc: "/etc/kubernetes".into(),
            cni_conf: crate::state::CNI_CONF_DIR.into(),
            cni_bin: crate::state::CNI_BIN_DIR.into(),
            flannel_run: "/run/flannel".into(),
            pod_logs: "/var/log/pods".into(),
            container_logs: "/var/log/containers".into(),
        }
    }
}

impl KubeDirs {
    pub fn manifests(&self) -> PathBuf {
        self.etc.join("manifests")
    }
    pub fn kubelet_config(&self) -> PathBuf {
        self.etc.join("kubelet-config.yaml")
    }
    pub fn flannel_conf(&self) -> PathBuf {
        self.etc.join("flannel/net-conf.json")
    }
    /// Names the kboot root whose role wrote these directories (see [`check_host_owner`]).
    pub fn owner_file(&self) -> PathBuf {
        self.etc.join("kboot-root")
    }
    /// The pod network kboot writes when flannel does not run (`USE_CNI=false`).
    pub fn bridge_conflist(&self) -> PathBuf {
        self.cni_conf.join("10-kboot-bridge.conflist")
    }
    /// flannel's pod network (`USE_CNI=true`).
    pub fn flannel_conflist(&self) -> PathBuf {
        self.cni_conf.join("10-flannel.conflist")
    }
    /// The kubeconfig a worker's kubelet writes after TLS bootstrapping.
    pub fn kubelet_kubeconfig(&self) -> PathBuf {
        self.kubelet.join("kubeconfig")
    }
    /// The client certificate and key (one PEM file) a worker's kubelet got by TLS
    /// bootstrapping and rotates (`--cert-dir`).
    pub fn kubelet_client_cert(&self) -> PathBuf {
        self.kubelet_cert_dir().join("kubelet-client-current.pem")
    }
    /// The kubelet's `--cert-dir`.
    pub fn kubelet_cert_dir(&self) -> PathBuf {
        self.kubelet.join("pki")
    }
}

/// A file `run` writes from the PKI (so its content is not known before, or is secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GeneratedFile {
    pub path: PathBuf,
    pub mode: String,
    pub what: String,
}

/// What the PKI step will produce (names only; nothing secret).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PkiPlan {
    pub dir: PathBuf,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<LeafSpec>,
    pub generated: Vec<GeneratedFile>,
}

/// Everything `kboot run master|worker` does, in order: preflight, PKI, files, services.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RolePlan {
    pub role: Role,
    pub config: NodeConfig,
    /// `linux/ARCH`: which manifest of a multi-platform image to pull.
    pub platform: String,
    /// The foreground command that runs this plan: what `kboot service install` puts in the
    /// boot unit. Filled in by the caller, which knows the binary and the flags
    /// ([`crate::service::run_command`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    pub pki: PkiPlan,
    /// Static files and the services, in start order.
    #[serde(flatten)]
    pub plan: Plan,
}

#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(
        "a {family} worker cannot join securely before v1.10 (no bootstrap tokens and TLS bootstrapping with a CRI \
         kubelet): use K8S_VERSION v1.10 or newer"
    )]
    WorkerTooOld { family: Family },
    #[error(
        "{} belongs to the kboot role under {} ({}): a host runs one role, because Kubernetes' \
         directories (/etc/kubernetes, /var/lib/kubelet, /var/log/pods, /etc/cni/net.d) do not move \
         with --root. Stop that one first (`kboot --root {} down --purge`), or run this one \
         in its own mount namespace",
        etc.display(), root.display(), owner.display(), root.display()
    )]
    HostTaken {
        etc: PathBuf,
        root: PathBuf,
        owner: PathBuf,
    },
    #[error("read {}", path.display())]
    ReadOwner {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("encode {what}")]
    Encode {
        what: String,
        #[source]
        source: serde_norway::Error,
    },
}

/// One role per host: Kubernetes' directories are fixed, and the static pod manifests in
/// them name one root's PKI. `run` refuses a root other than the one named by the owner
/// file the previous role wrote (kept by `down`, removed by `down --purge` with the
/// manifests). Directories written before the owner file existed are not claimed.
pub fn check_host_owner(paths: &Paths, dirs: &KubeDirs) -> Result<(), RoleError> {
    let owner = dirs.owner_file();
    let text = match std::fs::read_to_string(&owner) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(RoleError::ReadOwner { path: owner, source }),
    };
    let root = PathBuf::from(text.trim_end_matches('\n'));
    if root == paths.root() {
        return Ok(());
    }
    Err(RoleError::HostTaken {
        etc: dirs.etc.clone(),
        root,
        owner,
    })
}

/// Whether this configuration can use bootstrap tokens and TLS bootstrapping.
pub fn supports_secure_join(cfg: &NodeConfig) -> bool {
    cfg.family == Family::Modern || cfg.k8s_version.at_least(1, 10)
}

/// Kubelets before v1.10 only speak Docker (or CRI v1alpha1, which kboot does not serve).
pub fn kubelet_needs_docker(cfg: &NodeConfig) -> bool {
    cfg.family == Family::Hyperkube && !cfg.k8s_version.at_least(1, 10)
}

/// Builds the role's plan. Pure: reads nothing, writes nothing.
pub fn build(cfg: &NodeConfig, paths: &Paths, dirs: &KubeDirs) -> Result<RolePlan, RoleError> {
    if cfg.role == Role::Worker && !supports_secure_join(cfg) {
        return Err(RoleError::WorkerTooOld { family: cfg.family });
    }
    let layout = PkiLayout::new(paths.pki());
    let ctx = components::Ctx {
        cfg,
        paths,
        dirs,
        layout: &layout,
        images: images::images(cfg),
    };
    let mut plan = Plan::default();
    plan.files.push(crate::plan::PlanFile {
        path: dirs.owner_file(),
        mode: 0o644,
        content: format!("{}\n", paths.root().display()),
    });
    let pki_plan = match cfg.role {
        Role::Master => {
            components::master(&ctx, &mut plan)?;
            master_pki_plan(cfg, paths, &layout)
        }
        Role::Worker => {
            components::worker(&ctx, &mut plan)?;
            worker_pki_plan(&layout)
        }
    };
    Ok(RolePlan {
        role: cfg.role,
        config: cfg.clone(),
        platform: format!("linux/{}", cfg.arch),
        command: Vec::new(),
        warnings: warnings(cfg),
        pki: pki_plan,
        plan,
    })
}

/// What works on this version but not as a user expects.
fn warnings(cfg: &NodeConfig) -> Vec<String> {
    let mut warnings = Vec::new();
    if kubelet_needs_docker(cfg) {
        warnings.push(format!(
            "kubelet {} predates the CRI kboot serves (runtime.v1alpha2, v1.10+): it talks only to a Docker API, which \
             kboot does not provide, so its pods (the control plane's static pods included) will not start. \
             Use v1.10 or newer to run pods.",
            cfg.k8s_version
        ));
    }
    if cfg.family == Family::Hyperkube && !cfg.k8s_version.at_least(1, 6) {
        warnings.push(format!(
            "Kubernetes {} has no RBAC: the apiserver runs with --authorization-mode=AlwaysAllow, so any \
             authenticated client is an administrator",
            cfg.k8s_version
        ));
    }
    warnings
}

/// A master makes the cluster PKI: CAs, certificates, keys, kubeconfigs, the bootstrap token.
fn master_pki_plan(cfg: &NodeConfig, paths: &Paths, layout: &PkiLayout) -> PkiPlan {
    let mut generated = vec![
        gen(
            &layout.dir().join("*.crt, *.key, etcd/*"),
            "0644/0600",
            "CAs, certificates and keys listed above",
        ),
        gen(
            &layout.sa_key(),
            "0600",
            "service-account token signing key (public half: sa.pub)",
        ),
        gen(
            &layout.bootstrap_token(),
            "0600",
            "bootstrap token `id.secret` workers join with",
        ),
    ];
    for kc in pki::KUBECONFIGS {
        generated.push(gen(
            &layout.kubeconfig(kc.file),
            "0600",
            &format!("kubeconfig with the {} client certificate", kc.leaf),
        ));
    }
    if supports_secure_join(cfg) {
        generated.extend(bootstrap::generated_files(paths));
    }
    PkiPlan {
        dir: layout.dir().to_path_buf(),
        certificates: pki::leaf_specs(&NodeIdentity::new(cfg.ip_address, cfg.master_ip)),
        generated,
    }
}

/// A worker gets the master's CA and a bootstrap kubeconfig; its kubelet requests the rest.
fn worker_pki_plan(layout: &PkiLayout) -> PkiPlan {
    PkiPlan {
        dir: layout.dir().to_path_buf(),
        certificates: Vec::new(),
        generated: vec![
            gen(
                &layout.ca_cert(pki::Authority::Kubernetes),
                "0644",
                "the master's CA, accepted only if its public key matches --ca-cert-hash",
            ),
            gen(
                &layout.bootstrap_kubeconfig(),
                "0600",
                "kubeconfig with the bootstrap token, for the kubelet's TLS bootstrapping",
            ),
        ],
    }
}

fn gen(path: &std::path::Path, mode: &str, what: &str) -> GeneratedFile {
    GeneratedFile {
        path: path.to_path_buf(),
        mode: mode.to_string(),
        what: what.to_string(),
    }
}

/// `kboot plan --format yaml`.
pub fn to_yaml(plan: &RolePlan) -> Result<String, RoleError> {
    serde_norway::to_string(plan).map_err(|source| RoleError::Encode {
        what: "plan".into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_root_is_refused_the_hosts_kubernetes_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = KubeDirs {
            etc: tmp.path().join("etc"),
            ..KubeDirs::default()
        };
        let first = Paths::under(tmp.path().join("first"));
        let second = Paths::under(tmp.path().join("second"));
        check_host_owner(&second, &dirs).expect("nobody owns a fresh host");
        // What `run` writes: the owner file is one of the plan's files.
        let cfg = config::tests::config(Role::Master, &[]);
        let plan = build(&cfg, &first, &dirs).unwrap();
        let owner = plan.plan.files.iter().find(|f| f.path == dirs.owner_file()).unwrap();
        std::fs::create_dir_all(&dirs.etc).unwrap();
        std::fs::write(&owner.path, &owner.content).unwrap();

        check_host_owner(&first, &dirs).expect("the same root converges");
        let err = check_host_owner(&second, &dirs).unwrap_err().to_string();
        assert!(
            err.contains(&first.root().display().to_string()) && err.contains("down --purge"),
            "{err}"
        );
    }
}
