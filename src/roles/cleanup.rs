//! The role half of `kboot down`: what the containers leave behind on the host.
//!
//! kube-deploy's turndown removed only running containers and `cni0`, asked before
//! wiping `/var/lib/kubelet` (deleting etcd's data with it), and left flannel links and
//! iptables chains. Here: every mount under the kubelet directory goes, the flannel and
//! bridge links go, the chains kube-proxy, flannel and kboot created go; etcd data, PKI
//! and files stay unless `purge`. It never asks anything.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::KubeDirs;
use crate::state::Paths;

/// Links the pod network creates: the CNI bridge and flannel's udp and vxlan devices.
pub const NETWORK_LINKS: [&str; 3] = ["cni0", "flannel.1", "flannel0"];
/// iptables chain prefixes of kube-proxy, flannel and kboot.
pub const CHAIN_PREFIXES: [&str; 3] = ["KUBE-", "FLANNEL-", "KBOOT-"];
const TABLES: [&str; 3] = ["filter", "nat", "mangle"];

/// The host operations `down` performs; a fake records them in tests.
pub trait HostOps {
    fn mountinfo(&self) -> io::Result<String>;
    fn unmount(&self, path: &Path) -> io::Result<()>;
    /// Deletes a network link; Ok(false) when it does not exist.
    fn delete_link(&self, name: &str) -> io::Result<bool>;
    /// `iptables-save -t TABLE`; None when iptables is not installed.
    fn iptables_save(&self, table: &str) -> io::Result<Option<String>>;
    fn iptables_restore(&self, table: &str, rules: &str) -> io::Result<()>;
    fn remove_all(&self, path: &Path) -> io::Result<()>;
}

/// The real host.
#[derive(Debug, Default)]
pub struct RealHostOps;

fn run(cmd: &mut Command, input: Option<&str>) -> io::Result<std::process::Output> {
    use std::io::Write;
    use std::process::Stdio;
    cmd.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(text.as_bytes())?;
    }
    child.wait_with_output()
}

impl HostOps for RealHostOps {
    fn mountinfo(&self) -> io::Result<String> {
        std::fs::read_to_string("/proc/self/mountinfo")
    }
    fn unmount(&self, path: &Path) -> io::Result<()> {
        // Lazy: a busy mount (a dying container still holds it) goes once released.
        nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH).map_err(io::Error::from)
    }
    fn delete_link(&self, name: &str) -> io::Result<bool> {
        if !Path::new("/sys/class/net").join(name).exists() {
            return Ok(false);
        }
        let out = run(Command::new("ip").args(["link", "delete", name]), None)?;
        if out.status.success() {
            Ok(true)
        } else {
            Err(io::Error::other(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ))
        }
    }
    fn iptables_save(&self, table: &str) -> io::Result<Option<String>> {
        match run(Command::new("iptables-save").args(["-t", table]), None) {
            Ok(out) if out.status.success() => Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned())),
            Ok(out) => Err(io::Error::other(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            )),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
    fn iptables_restore(&self, table: &str, rules: &str) -> io::Result<()> {
        let out = run(Command::new("iptables-restore").args(["-T", table]), Some(rules))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(io::Error::other(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ))
        }
    }
    fn remove_all(&self, path: &Path) -> io::Result<()> {
        match std::fs::remove_dir_all(path) {
            Err(e) if e.kind() == io::ErrorKind::NotADirectory => std::fs::remove_file(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }
}

/// What `down_role` did; failures are collected, not fatal, so one stuck mount does not
/// leave the rest behind.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DownReport {
    pub unmounted: Vec<PathBuf>,
    pub links_removed: Vec<String>,
    pub chains_removed: Vec<String>,
    pub purged: Vec<PathBuf>,
    pub errors: Vec<String>,
}

/// Mount points at or under `dir`, deepest first, from `/proc/self/mountinfo` text.
pub fn mounts_under(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = crate::base::mountinfo::parse(mountinfo)
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|p| p.starts_with(dir))
        .collect();
    // Deepest first; a path mounted twice is unmounted twice (stacked mounts).
    found.sort_by(|a, b| b.components().count().cmp(&a.components().count()).then(b.cmp(a)));
    found
}

/// Whether `path` is still a mount point, by a fresh read of the mount table.
fn still_mounted(host: &dyn HostOps, path: &Path) -> bool {
    host.mountinfo()
        .map(|info| mounts_under(&info, path).iter().any(|m| m == path))
        .unwrap_or(true)
}

/// An `iptables-save` table without the chains whose names start with one of `prefixes`
/// and without the rules that jump to them. Returns the new text and the removed chains,
/// or None when there is nothing to remove.
pub fn strip_chains(save: &str, prefixes: &[&str]) -> Option<(String, Vec<String>)> {
    let ours = |chain: &str| prefixes.iter().any(|p| chain.starts_with(p));
    let mut removed = Vec::new();
    let mut out = String::new();
    for line in save.lines() {
        if let Some(decl) = line.strip_prefix(':') {
            let chain = decl.split_whitespace().next().unwrap_or("");
            if ours(chain) {
                removed.push(chain.to_string());
                continue;
            }
        } else if line.starts_with("-A ") || line.starts_with("-I ") {
            let words: Vec<&str> = line.split_whitespace().collect();
            let in_ours = words.get(1).is_some_and(|c| ours(c));
            let jumps_to_ours = words
                .windows(2)
                .any(|w| (w[0] == "-j" || w[0] == "-g" || w[0] == "--jump" || w[0] == "--goto") && ours(w[1]));
            if in_ours || jumps_to_ours {
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    (!removed.is_empty()).then_some((out, removed))
}

/// Cleans up after the roles. The containers must be stopped first (the containers module's
/// `down` calls this after removing them).
pub fn down_role(paths: &Paths, dirs: &KubeDirs, purge: bool, host: &dyn HostOps) -> DownReport {
    let mut r = DownReport::default();
    match host.mountinfo() {
        Ok(info) => {
            for m in mounts_under(&info, &dirs.kubelet) {
                match host.unmount(&m) {
                    Ok(()) => r.unmounted.push(m),
                    // The list is read once; unmounting a parent can take a propagated or
                    // nested mount with it. A mount that is gone by now is not a problem, nor
                    // is one whose path no longer exists (its twin's detach took the directory
                    // with it; the table lists the entry until the kernel drops it).
                    Err(e) if e.kind() == io::ErrorKind::NotFound || !still_mounted(host, &m) => {
                        tracing::debug!(path = %m.display(), error = %e, "already unmounted");
                    }
                    Err(e) => r.errors.push(format!("unmount {}: {e}", m.display())),
                }
            }
        }
        Err(e) => r.errors.push(format!("read /proc/self/mountinfo: {e}")),
    }
    for link in NETWORK_LINKS {
        match host.delete_link(link) {
            Ok(true) => r.links_removed.push(link.to_string()),
            Ok(false) => {}
            Err(e) => r.errors.push(format!("delete link {link}: {e}")),
        }
    }
    for table in TABLES {
        match host.iptables_save(table) {
            Ok(Some(save)) => {
                if let Some((rules, removed)) = strip_chains(&save, &CHAIN_PREFIXES) {
                    match host.iptables_restore(table, &rules) {
                        Ok(()) => r
                            .chains_removed
                            .extend(removed.into_iter().map(|c| format!("{table}/{c}"))),
                        Err(e) => r.errors.push(format!("iptables-restore -T {table}: {e}")),
                    }
                }
            }
            Ok(None) => break,
            Err(e) => r.errors.push(format!("iptables-save -t {table}: {e}")),
        }
    }
    // The pod network's configuration (bridge or flannel) is rewritten by every `run`: a
    // stopped node leaves no CNI configuration behind for another runtime to pick up.
    for conflist in [dirs.bridge_conflist(), dirs.flannel_conflist()] {
        if conflist.exists() {
            match host.remove_all(&conflist) {
                Ok(()) => r.purged.push(conflist),
                Err(e) => r.errors.push(format!("remove {}: {e}", conflist.display())),
            }
        }
    }
    if purge {
        let mut targets = vec![
            paths.etcd_data(),
            paths.cni_data(),
            paths.pki(),
            dirs.kubelet.clone(),
            dirs.manifests(),
            dirs.kubelet_config(),
            dirs.owner_file(),
            dirs.flannel_conf(),
            dirs.flannel_run.clone(),
        ];
        // The pods' logs (the kubelet counts a static pod's restarts from the files it finds,
        // so a new cluster would start with the old counts). The directories stay: they are
        // the kubelet's mount points.
        for logs in [&dirs.pod_logs, &dirs.container_logs] {
            if let Ok(entries) = std::fs::read_dir(logs) {
                targets.extend(entries.filter_map(|e| e.ok().map(|e| e.path())));
            }
        }
        targets.retain(|t| t.exists() || t.is_symlink());
        for t in targets {
            match host.remove_all(&t) {
                Ok(()) => r.purged.push(t),
                Err(e) => r.errors.push(format!("remove {}: {e}", t.display())),
            }
        }
    }
    r
}

/// [`down_role`] on this host with Kubernetes' standard directories: what `kboot down`
/// calls after removing the containers.
pub fn down_role_host(paths: &Paths, purge: bool) -> DownReport {
    down_role(paths, &KubeDirs::default(), purge, &RealHostOps)
}

/// The role cleanup `kboot down` should run: only when a role was brought up with this root
/// (a master's PKI identity or a worker's bootstrap kubeconfig exists), so `down` after a
/// plain `run -f` never touches the host's kubelet mounts, links or iptables.
pub fn down_role_if_any(paths: &Paths, purge: bool) -> Option<DownReport> {
    let layout = crate::pki::PkiLayout::new(paths.pki());
    (layout.identity().exists() || layout.bootstrap_kubeconfig().exists()).then(|| down_role_host(paths, purge))
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    #[derive(Default)]
    struct Fake {
        mountinfo: String,
        links: Vec<&'static str>,
        save: Option<String>,
        calls: RefCell<Vec<String>>,
    }

    impl HostOps for Fake {
        fn mountinfo(&self) -> io::Result<String> {
            Ok(self.mountinfo.clone())
        }
        fn unmount(&self, path: &Path) -> io::Result<()> {
            self.calls.borrow_mut().push(format!("umount {}", path.display()));
            Ok(())
        }
        fn delete_link(&self, name: &str) -> io::Result<bool> {
            Ok(self.links.contains(&name))
        }
        fn iptables_save(&self, _table: &str) -> io::Result<Option<String>> {
            Ok(self.save.clone())
        }
        fn iptables_restore(&self, table: &str, rules: &str) -> io::Result<()> {
            self.calls.borrow_mut().push(format!("restore {table}\n{rules}"));
            Ok(())
        }
        fn remove_all(&self, path: &Path) -> io::Result<()> {
            self.calls.borrow_mut().push(format!("rm {}", path.display()));
            RealHostOps.remove_all(path)
        }
    }

    const MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 8:1 /var/lib/kubelet /var/lib/kubelet rw shared:5 - ext4 /dev/sda1 rw
31 30 0:50 / /var/lib/kubelet/pods/u1/volumes/kubernetes.io~projected/kube-api-access rw - tmpfs tmpfs rw
32 30 0:51 / /var/lib/kubelet/pods/u2/volumes/a\\040b rw - tmpfs tmpfs rw
33 22 0:52 / /var/lib/kubelet-other rw - tmpfs tmpfs rw
";

    #[test]
    fn down_role_if_any_does_nothing_when_no_role_ran_on_this_root() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(down_role_if_any(&Paths::under(tmp.path()), true).is_none());
    }

    #[test]
    fn mounts_under_lists_deepest_first_and_unescapes() {
        let m = mounts_under(MOUNTINFO, Path::new("/var/lib/kubelet"));
        assert_eq!(m.len(), 3, "{m:?}");
        assert_eq!(m.last().unwrap(), Path::new("/var/lib/kubelet"));
        assert!(m.contains(&PathBuf::from("/var/lib/kubelet/pods/u2/volumes/a b")));
        assert!(!m.iter().any(|p| p.starts_with("/var/lib/kubelet-other")));
    }

    const SAVE: &str = "\
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
:KUBE-SERVICES - [0:0]
:FLANNEL-POSTRTG - [0:0]
-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES
-A POSTROUTING -j FLANNEL-POSTRTG
-A POSTROUTING -s 172.17.0.0/16 -j MASQUERADE
-A KUBE-SERVICES -d 10.0.0.1/32 -j KUBE-SVC-X
-A FLANNEL-POSTRTG -s 10.1.0.0/16 -j RETURN
COMMIT
";

    #[test]
    fn strip_chains_removes_ours_and_the_jumps_to_them_only() {
        let (out, removed) = strip_chains(SAVE, &CHAIN_PREFIXES).unwrap();
        assert_eq!(removed, ["KUBE-SERVICES", "FLANNEL-POSTRTG"]);
        assert!(!out.contains("KUBE-") && !out.contains("FLANNEL-"), "{out}");
        for kept in [":DOCKER - [0:0]", "-s 172.17.0.0/16 -j MASQUERADE", "COMMIT", "*nat"] {
            assert!(out.contains(kept), "lost {kept}:\n{out}");
        }
        assert!(strip_chains("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n", &CHAIN_PREFIXES).is_none());
    }

    /// Every kubelet-side host directory inside a test's temp dir.
    fn dirs_in(dir: &Path) -> KubeDirs {
        KubeDirs {
            kubelet: dir.join("kubelet"),
            etc: dir.join("etc"),
            cni_conf: dir.join("cni"),
            cni_bin: dir.join("cnibin"),
            flannel_run: dir.join("flannel"),
            pod_logs: dir.join("pods"),
            container_logs: dir.join("containers"),
        }
    }

    /// A volume mounted twice under `/kubelet/pods` (a mount and its propagated copy): one
    /// detached unmount takes both, so the second unmount of that path fails with ENOENT,
    /// as seen on the real host.
    struct Vanishing {
        kubelet: PathBuf,
        volume_gone: RefCell<bool>,
        /// The mount table still lists the detached twin (seen in the e2e run).
        table_keeps_entry: bool,
    }

    impl HostOps for Vanishing {
        fn mountinfo(&self) -> io::Result<String> {
            let k = self.kubelet.display();
            let mut info = format!("30 22 8:1 / {k} rw - ext4 /dev/sda1 rw\n");
            if self.table_keeps_entry || !*self.volume_gone.borrow() {
                for id in [31, 32] {
                    info.push_str(&format!("{id} 30 0:9 / {k}/pods/u/volumes/v rw - tmpfs tmpfs rw\n"));
                }
            }
            Ok(info)
        }
        fn unmount(&self, path: &Path) -> io::Result<()> {
            if path == self.kubelet {
                return Ok(());
            }
            if self.volume_gone.replace(true) {
                return Err(io::Error::from(io::ErrorKind::NotFound));
            }
            Ok(())
        }
        fn delete_link(&self, _name: &str) -> io::Result<bool> {
            Ok(false)
        }
        fn iptables_save(&self, _table: &str) -> io::Result<Option<String>> {
            Ok(None)
        }
        fn iptables_restore(&self, _table: &str, _rules: &str) -> io::Result<()> {
            Ok(())
        }
        fn remove_all(&self, path: &Path) -> io::Result<()> {
            std::fs::remove_dir_all(path)
        }
    }

    #[test]
    fn down_role_a_mount_already_gone_with_its_twin_is_not_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = Paths::under(tmp.path());
        let dirs = dirs_in(tmp.path());
        for table_keeps_entry in [false, true] {
            let host = Vanishing {
                kubelet: dirs.kubelet.clone(),
                volume_gone: RefCell::new(false),
                table_keeps_entry,
            };
            let r = down_role(&paths, &dirs, false, &host);
            assert!(r.errors.is_empty(), "{r:?}");
            assert_eq!(r.unmounted.len(), 2, "{r:?}");
        }
    }

    #[test]
    fn down_role_keeps_data_without_purge_and_removes_it_with_purge() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = Paths::under(tmp.path());
        let dirs = dirs_in(tmp.path());
        for d in [
            paths.etcd_data(),
            paths.pki(),
            paths.cni_data(),
            dirs.kubelet.clone(),
            dirs.cni_conf.clone(),
        ] {
            std::fs::create_dir_all(&d).unwrap();
        }
        std::fs::write(dirs.bridge_conflist(), "{}").unwrap();
        std::fs::write(dirs.flannel_conflist(), "{}").unwrap();
        let pod_log = dirs
            .pod_logs
            .join("kube-system_kube-apiserver-x_uid/kube-apiserver/0.log");
        std::fs::create_dir_all(pod_log.parent().unwrap()).unwrap();
        std::fs::write(&pod_log, "").unwrap();
        std::fs::create_dir_all(&dirs.container_logs).unwrap();
        std::os::unix::fs::symlink(&pod_log, dirs.container_logs.join("kube-apiserver-x.log")).unwrap();
        let info = format!(
            "30 22 8:1 / {} rw - ext4 /dev/sda1 rw\n",
            dirs.kubelet.join("pods/x").display()
        );
        let fake = Fake {
            mountinfo: info,
            links: vec!["cni0", "flannel.1"],
            save: Some(SAVE.to_string()),
            ..Fake::default()
        };
        let r = down_role(&paths, &dirs, false, &fake);
        assert_eq!(r.unmounted, [dirs.kubelet.join("pods/x")]);
        assert_eq!(r.links_removed, ["cni0", "flannel.1"]);
        assert!(r.chains_removed.contains(&"nat/KUBE-SERVICES".to_string()));
        assert_eq!(
            r.purged,
            [dirs.bridge_conflist(), dirs.flannel_conflist()],
            "only the network config goes"
        );
        assert!(r.errors.is_empty(), "{r:?}");
        assert!(
            paths.etcd_data().exists() && paths.pki().exists() && paths.cni_data().exists(),
            "etcd data, PKI and IP allocations survive a plain down"
        );

        let r = down_role(&paths, &dirs, true, &fake);
        assert!(
            r.purged.contains(&paths.etcd_data()) && r.purged.contains(&paths.pki()),
            "{r:?}"
        );
        assert!(!paths.etcd_data().exists() && !paths.pki().exists() && !dirs.kubelet.exists());
        assert!(!paths.cni_data().exists());
        for logs in [&dirs.pod_logs, &dirs.container_logs] {
            assert_eq!(
                std::fs::read_dir(logs).unwrap().count(),
                0,
                "{} emptied",
                logs.display()
            );
        }
    }
}
