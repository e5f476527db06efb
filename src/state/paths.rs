use std::path::{Path, PathBuf};

/// Default persistent root: images, rootfs, containers, PKI.
pub const DEFAULT_ROOT: &str = "/var/lib/kboot";
/// Default runtime state: shim pids, libcontainer state, sockets. Gone after a reboot.
pub const DEFAULT_STATE: &str = "/run/kboot";
/// Default configuration directory.
pub const DEFAULT_CONFIG: &str = "/etc/kboot";
/// Where CNI network configurations are looked up by default (the kubelet's and CNI's convention).
pub const CNI_CONF_DIR: &str = "/etc/cni/net.d";
/// Where kboot's roles install CNI plugins, and the first place the CRI looks for them.
pub const CNI_BIN_DIR: &str = "/opt/cni/bin";
/// Every directory the CRI searches for CNI plugins by default (Debian packages use the second).
pub const CNI_BIN_DIRS: [&str; 2] = [CNI_BIN_DIR, "/usr/lib/cni"];

/// Every location kboot reads or writes, derived from three directories.
///
/// `root` survives reboots (content, images, rootfs, container records, PKI);
/// `state` is runtime state under `/run` (lost on reboot, rebuilt from `root`);
/// `config` holds what the operator writes (registries, defaults, plans).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    root: PathBuf,
    state: PathBuf,
    config: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Self::new(DEFAULT_ROOT, DEFAULT_STATE, DEFAULT_CONFIG)
    }
}

impl Paths {
    pub fn new(root: impl Into<PathBuf>, state: impl Into<PathBuf>, config: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            state: state.into(),
            config: config.into(),
        }
    }

    /// Everything under one directory: `DIR/root`, `DIR/state`, `DIR/config`.
    /// Meant for tests and throwaway runs.
    pub fn under(dir: impl AsRef<Path>) -> Self {
        let dir = dir.as_ref();
        Self::new(dir.join("root"), dir.join("state"), dir.join("config"))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn state(&self) -> &Path {
        &self.state
    }
    pub fn config(&self) -> &Path {
        &self.config
    }

    // --- content store -------------------------------------------------------

    /// `content/`: the content-addressed store.
    pub fn content(&self) -> PathBuf {
        self.root.join("content")
    }
    /// `content/blobs/`: blobs by algorithm and hex digest.
    pub fn blobs(&self) -> PathBuf {
        self.content().join("blobs")
    }
    /// `content/blobs/<algorithm>/<hex>`.
    pub fn blob(&self, algorithm: &str, hex: &str) -> PathBuf {
        self.blobs().join(algorithm).join(hex)
    }
    /// `content/ingest/`: partial downloads, resumable, one file per digest.
    pub fn ingest(&self) -> PathBuf {
        self.content().join("ingest")
    }
    /// `images/`: the name → manifest digest index.
    pub fn images(&self) -> PathBuf {
        self.root.join("images")
    }
    /// `locks/`: advisory lock files (store, images, supervisor).
    pub fn locks(&self) -> PathBuf {
        self.root.join("locks")
    }

    // --- rootfs cache ----------------------------------------------------------

    /// `rootfs/`: unpacked images keyed by chain ID.
    pub fn rootfs_cache(&self) -> PathBuf {
        self.root.join("rootfs")
    }
    /// `rootfs/<chain-id hex>/`.
    pub fn rootfs(&self, chain_id_hex: &str) -> PathBuf {
        self.rootfs_cache().join(chain_id_hex)
    }

    // --- containers ----------------------------------------------------------------

    /// `containers/`: one directory per container kboot manages.
    pub fn containers(&self) -> PathBuf {
        self.root.join("containers")
    }
    /// `containers/<name>/`: bundle, records, logs, writable rootfs.
    pub fn container(&self, name: &str) -> ContainerDir {
        ContainerDir(self.containers().join(name))
    }

    /// The cgroupfs path of a container: `/kboot/<name>` for the default
    /// root, `/kboot-<hash of root>/<name>` otherwise, so two roots on one host
    /// (tests, side-by-side installs) never share a cgroup. With the systemd driver this
    /// becomes a scope in `kboot.slice` (`cgroups::Driver::container_path`).
    pub fn cgroup(&self, name: &str) -> String {
        if self.root == Path::new(DEFAULT_ROOT) {
            format!("/kboot/{name}")
        } else {
            use sha2::Digest;
            let h = sha2::Sha256::digest(self.root.as_os_str().as_encoded_bytes());
            format!("/kboot-{}/{name}", &hex::encode(h)[..12])
        }
    }

    /// `cgroup-driver`: the cgroup driver `kboot run` chose (`cgroupfs` or `systemd`), read
    /// by the supervisor and the CRI; without it they detect the host's
    /// (`cgroups::Driver::load`).
    pub fn cgroup_driver_file(&self) -> PathBuf {
        self.state.join("cgroup-driver")
    }

    /// `supervisor.log`: output of the background supervisor (`run --detach`).
    pub fn supervisor_log(&self) -> PathBuf {
        self.root.join("supervisor.log")
    }

    // --- CRI ---------------------------------------------------------------------------

    /// `sandboxes/`: one directory per CRI pod sandbox (its config as given, its state).
    pub fn sandboxes(&self) -> PathBuf {
        self.root.join("sandboxes")
    }
    /// `sandboxes/<id>/`.
    pub fn sandbox(&self, id: &str) -> SandboxDir {
        SandboxDir(self.sandboxes().join(id))
    }
    /// `netns/` under the runtime state: bind-mounted network namespaces of pod sandboxes.
    pub fn netns_dir(&self) -> PathBuf {
        self.state.join("netns")
    }
    /// `netns/<sandbox id>`: the pinned network namespace of one sandbox.
    pub fn netns(&self, sandbox_id: &str) -> PathBuf {
        self.netns_dir().join(sandbox_id)
    }
    /// `netns/<sandbox id>.ipc`: the pinned IPC namespace of one sandbox (beside its
    /// network namespace, so `down` releases both).
    pub fn ipcns(&self, sandbox_id: &str) -> PathBuf {
        self.netns_dir().join(format!("{sandbox_id}.ipc"))
    }

    /// `cni/`: the IP allocations of the pod network kboot's roles configure (host-local's
    /// `dataDir`), under the root so two roots never hand out each other's addresses and
    /// `down --purge` takes them.
    pub fn cni_data(&self) -> PathBuf {
        self.root.join("cni")
    }

    // --- pki --------------------------------------------------------------------------

    /// `pki/`: CA, certificates, keys (0600), kubeconfigs.
    pub fn pki(&self) -> PathBuf {
        self.root.join("pki")
    }

    /// `pki/bootstrap/`: the cluster bootstrap objects kboot applies on a master
    /// (RBAC, bootstrap token Secret, cluster-info). Under `pki/` because the token is secret.
    pub fn bootstrap_objects(&self) -> PathBuf {
        self.pki().join("bootstrap")
    }

    // --- etcd ---------------------------------------------------------------------------

    /// `etcd/`: the master's etcd data directory. Outside `/var/lib/kubelet`, so cleaning
    /// the kubelet's directory never wipes the cluster (kube-deploy's turndown did).
    pub fn etcd_data(&self) -> PathBuf {
        self.root.join("etcd")
    }

    // --- runtime state ----------------------------------------------------------------

    /// libcontainer's state root (one directory per running container).
    pub fn runtime_root(&self) -> PathBuf {
        self.state.join("runtime")
    }
    /// `shims/`: one record per running shim (pid, container).
    pub fn shims(&self) -> PathBuf {
        self.state.join("shims")
    }
    /// `shims/<id>.json`: the record of the running shim of container `id`.
    pub fn shim_record(&self, id: &str) -> PathBuf {
        self.shims().join(format!("{id}.json"))
    }
    /// `attach/`: the shims' attach sockets (kept short: a socket path has 108 bytes at most).
    pub fn attach_sockets(&self) -> PathBuf {
        self.state.join("attach")
    }
    /// `attach/<id>.sock`: where the shim of container `id` serves its stdio to attachers.
    pub fn attach_socket(&self, id: &str) -> PathBuf {
        self.attach_sockets().join(format!("{id}.sock"))
    }
    /// `supervisor.pid`: pid of the running supervisor, beside its lock.
    pub fn supervisor_pid(&self) -> PathBuf {
        self.state.join("supervisor.pid")
    }
    /// `supervisor.wake`: the running supervisor's datagram socket; a datagram on it means
    /// "what is wanted changed, reconcile now".
    pub fn supervisor_wake(&self) -> PathBuf {
        self.state.join("supervisor.wake")
    }
    /// `supervisor.lock`: held (flock) by the one running supervisor.
    pub fn supervisor_lock(&self) -> PathBuf {
        self.state.join("supervisor.lock")
    }
    /// The CRI socket the kubelet talks to.
    pub fn cri_socket(&self) -> PathBuf {
        self.state.join("cri.sock")
    }

    // --- configuration ----------------------------------------------------------------

    /// `registries.toml`: mirrors, rewrite rules, credentials, insecure hosts.
    pub fn registries_config(&self) -> PathBuf {
        self.config.join("registries.toml")
    }
    /// `config.toml`: node defaults (versions, addresses, networking).
    pub fn node_config(&self) -> PathBuf {
        self.config.join("config.toml")
    }
}

/// One container's directory, `containers/<name>/`, and every name in it.
/// Its writers: the supervisor and the CRI (desired/status/health records,
/// bundle, CRI records), the shim (exit record, logs), the rootfs cache (writable
/// rootfs). Removing the directory removes the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerDir(PathBuf);

impl ContainerDir {
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn exists(&self) -> bool {
        self.0.exists()
    }
    /// `desired.json`: what the user wants (written by `run`, `stop`, `start`).
    pub fn desired(&self) -> PathBuf {
        self.0.join("desired.json")
    }
    /// `status.json`: the supervisor's restart bookkeeping.
    pub fn status(&self) -> PathBuf {
        self.0.join("status.json")
    }
    /// `health.json`: the last health check results.
    pub fn health(&self) -> PathBuf {
        self.0.join("health.json")
    }
    /// `exit.json`: how the last run ended, written by the shim.
    pub fn exit(&self) -> PathBuf {
        self.0.join("exit.json")
    }
    /// `bundle/`: the OCI bundle the shim runs.
    pub fn bundle(&self) -> PathBuf {
        self.0.join("bundle")
    }
    /// `bundle/config.json`: the OCI runtime spec.
    pub fn config_json(&self) -> PathBuf {
        config_json(&self.bundle())
    }
    /// `container.log`: the container's output in CRI log format.
    pub fn log(&self) -> PathBuf {
        self.0.join("container.log")
    }
    /// `shim.log`: the shim's own stdout/stderr (its errors before the container runs).
    pub fn shim_log(&self) -> PathBuf {
        self.0.join("shim.log")
    }
    /// `cri-config.pb`: the kubelet's `ContainerConfig`, as given.
    pub fn cri_config(&self) -> PathBuf {
        self.0.join("cri-config.pb")
    }
    /// `cri.json`: the CRI's record of the container (pod, image, log path).
    pub fn cri_record(&self) -> PathBuf {
        self.0.join("cri.json")
    }
    /// `rootfs/`: the writable rootfs (overlay mount point, or a copy).
    pub fn rootfs(&self) -> PathBuf {
        self.0.join("rootfs")
    }
    /// `rootfs-upper/`: the overlay upper directory.
    pub fn rootfs_upper(&self) -> PathBuf {
        self.0.join("rootfs-upper")
    }
    /// `rootfs-work/`: the overlay work directory.
    pub fn rootfs_work(&self) -> PathBuf {
        self.0.join("rootfs-work")
    }
    /// `.rootfs-copied`: marks a rootfs that is a copy, not an overlay.
    pub fn rootfs_copied(&self) -> PathBuf {
        self.0.join(".rootfs-copied")
    }
}

impl AsRef<Path> for ContainerDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

/// `<bundle>/config.json`, the one name the OCI runtime spec fixes.
pub fn config_json(bundle: &Path) -> PathBuf {
    bundle.join("config.json")
}

/// One CRI pod sandbox's directory, `sandboxes/<id>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxDir(PathBuf);

impl SandboxDir {
    pub fn path(&self) -> &Path {
        &self.0
    }
    /// `config.pb`: the kubelet's `PodSandboxConfig`, as given.
    pub fn config(&self) -> PathBuf {
        self.0.join("config.pb")
    }
    /// `state.json`: the sandbox's state (ready or not, its holder, its namespaces).
    pub fn state(&self) -> PathBuf {
        self.0.join("state.json")
    }
    /// `resolv.conf`: DNS settings bind-mounted into the pod's containers.
    pub fn resolv_conf(&self) -> PathBuf {
        self.0.join("resolv.conf")
    }
}

impl AsRef<Path> for SandboxDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_under_dir_keep_every_location_inside_it() {
        let p = Paths::under("/tmp/x");
        for path in [
            p.blob("sha256", "ab"),
            p.ingest(),
            p.images(),
            p.rootfs("cd"),
            p.container("etcd").path().to_path_buf(),
            p.container("etcd").config_json(),
            p.pki(),
            p.bootstrap_objects(),
            p.etcd_data(),
            p.runtime_root(),
            p.cri_socket(),
            p.sandbox("ab").resolv_conf(),
            p.netns("ab"),
            p.cni_data(),
            p.registries_config(),
            p.supervisor_lock(),
            p.supervisor_log(),
        ] {
            assert!(path.starts_with("/tmp/x"), "{} escapes the test dir", path.display());
        }
    }

    #[test]
    fn default_paths_match_the_documented_host_layout() {
        let p = Paths::default();
        assert_eq!(
            p.blob("sha256", "ab"),
            Path::new("/var/lib/kboot/content/blobs/sha256/ab")
        );
        assert_eq!(p.cri_socket(), Path::new("/run/kboot/cri.sock"));
        assert_eq!(p.registries_config(), Path::new("/etc/kboot/registries.toml"));
        assert_eq!(p.cgroup("etcd"), "/kboot/etcd");
    }

    #[test]
    fn cgroup_paths_differ_between_roots() {
        let a = Paths::under("/tmp/a").cgroup("etcd");
        let b = Paths::under("/tmp/b").cgroup("etcd");
        assert_ne!(a, b);
        assert!(a.starts_with("/kboot-") && a.ends_with("/etcd"));
    }
}
