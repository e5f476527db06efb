//! Pod sandbox records: the config exactly as the kubelet gave it (protobuf, so labels and
//! annotations are echoed back unchanged) plus kboot's own state (JSON), one directory per
//! sandbox under `Paths::sandboxes()`, so they survive a supervisor restart.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use kboot_cri::v1::{
    LinuxPodSandboxStatus, Namespace, NamespaceMode, NamespaceOption, PodIp, PodSandbox, PodSandboxConfig,
    PodSandboxFilter, PodSandboxNetworkStatus, PodSandboxState, PodSandboxStatus,
};
use prost::Message;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{CriError, Result};
use crate::state::Paths;

/// What kboot adds to the kubelet's config.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct SandboxState {
    /// Nanoseconds since the epoch.
    pub created_at: i64,
    pub ready: bool,
    pub runtime_handler: String,
    /// The pinned network namespace; `None` for hostNetwork pods.
    pub netns: Option<PathBuf>,
    /// The last CNI ADD result, needed by CHECK and DEL.
    pub cni_result: Option<Value>,
    pub ips: Vec<String>,
    /// The pinned IPC namespace its containers share; `None` for hostIPC pods.
    #[serde(default)]
    pub ipcns: Option<PathBuf>,
    /// The holder of its shared PID namespace, when `pid` is `POD`.
    #[serde(default)]
    pub pid_holder: Option<super::holder::PidHolder>,
}

#[derive(Debug, Clone)]
pub(crate) struct Sandbox {
    pub id: String,
    pub config: PodSandboxConfig,
    pub state: SandboxState,
}

impl Sandbox {
    pub fn namespace_options(&self) -> NamespaceOption {
        self.config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.clone())
            .unwrap_or_default()
    }

    pub fn host_network(&self) -> bool {
        self.namespace_options().network == NamespaceMode::Node as i32
    }

    /// Whether the namespaces kboot holds for the pod are still there (after a restart or a
    /// reboot they may not be).
    pub fn namespaces_intact(&self) -> bool {
        self.state.netns.as_deref().is_none_or(super::netns::is_pinned)
            && self.state.ipcns.as_deref().is_none_or(super::netns::is_pinned)
            && self.state.pid_holder.as_ref().is_none_or(|h| h.alive())
    }

    /// Whether anything is left to release on stop.
    pub fn holds_namespaces(&self) -> bool {
        self.state.netns.is_some() || self.state.ipcns.is_some() || self.state.pid_holder.is_some()
    }

    pub fn state_value(&self) -> PodSandboxState {
        if self.state.ready {
            PodSandboxState::SandboxReady
        } else {
            PodSandboxState::SandboxNotready
        }
    }

    pub fn status(&self) -> PodSandboxStatus {
        let mut ips = self.state.ips.iter();
        PodSandboxStatus {
            id: self.id.clone(),
            metadata: self.config.metadata.clone(),
            state: self.state_value() as i32,
            created_at: self.state.created_at,
            network: Some(PodSandboxNetworkStatus {
                ip: ips.next().cloned().unwrap_or_default(),
                additional_ips: ips.map(|ip| PodIp { ip: ip.clone() }).collect(),
            }),
            linux: Some(LinuxPodSandboxStatus {
                namespaces: Some(Namespace {
                    options: Some(self.namespace_options()),
                }),
            }),
            labels: self.config.labels.clone(),
            annotations: self.config.annotations.clone(),
            runtime_handler: self.state.runtime_handler.clone(),
        }
    }

    pub fn summary(&self) -> PodSandbox {
        PodSandbox {
            id: self.id.clone(),
            metadata: self.config.metadata.clone(),
            state: self.state_value() as i32,
            created_at: self.state.created_at,
            labels: self.config.labels.clone(),
            annotations: self.config.annotations.clone(),
            runtime_handler: self.state.runtime_handler.clone(),
        }
    }

    pub fn matches(&self, filter: &PodSandboxFilter) -> bool {
        (filter.id.is_empty() || self.id.starts_with(&filter.id))
            && filter
                .state
                .as_ref()
                .is_none_or(|s| s.state == self.state_value() as i32)
            && labels_match(&self.config.labels, &filter.label_selector)
    }

    /// Writes both files (temp → fsync → rename each).
    pub fn save(&self, paths: &Paths) -> Result<()> {
        let dir = paths.sandbox(&self.id);
        fs::create_dir_all(&dir).map_err(CriError::io("create the sandbox directory", dir.path()))?;
        write_atomic(&dir.config(), &self.config.encode_to_vec())?;
        let state = serde_json::to_vec_pretty(&self.state).map_err(|e| CriError::DecodeRecord {
            path: dir.state(),
            source: e.into(),
        })?;
        write_atomic(&dir.state(), &state)
    }

    /// `resolv.conf` for the pod's containers: the kubelet's DNS config when it gave one,
    /// else the host's (what Docker and containerd do).
    pub fn write_resolv_conf(&self, paths: &Paths) -> Result<()> {
        let dns = self.config.dns_config.clone().unwrap_or_default();
        let text = if dns.servers.is_empty() && dns.searches.is_empty() && dns.options.is_empty() {
            fs::read_to_string("/etc/resolv.conf").unwrap_or_default()
        } else {
            let mut t = String::new();
            if !dns.searches.is_empty() {
                t.push_str(&format!("search {}\n", dns.searches.join(" ")));
            }
            for s in &dns.servers {
                t.push_str(&format!("nameserver {s}\n"));
            }
            if !dns.options.is_empty() {
                t.push_str(&format!("options {}\n", dns.options.join(" ")));
            }
            t
        };
        write_atomic(&paths.sandbox(&self.id).resolv_conf(), text.as_bytes())
    }

    pub fn load(paths: &Paths, id: &str) -> Result<Self> {
        let dir = paths.sandbox(id);
        let config_path = dir.config();
        let bytes = fs::read(&config_path).map_err(CriError::io("read the sandbox config", &config_path))?;
        let config = PodSandboxConfig::decode(bytes.as_slice()).map_err(|e| CriError::DecodeRecord {
            path: config_path,
            source: e.into(),
        })?;
        let state_path = dir.state();
        let bytes = fs::read(&state_path).map_err(CriError::io("read the sandbox state", &state_path))?;
        let state = serde_json::from_slice(&bytes).map_err(|e| CriError::DecodeRecord {
            path: state_path,
            source: e.into(),
        })?;
        Ok(Self {
            id: id.to_owned(),
            config,
            state,
        })
    }

    /// Every sandbox on disk. A record that cannot be read is logged and skipped, so one
    /// torn directory cannot take the whole runtime down.
    pub fn load_all(paths: &Paths) -> Vec<Self> {
        let Ok(entries) = fs::read_dir(paths.sandboxes()) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            match Self::load(paths, &id) {
                Ok(s) => out.push(s),
                Err(err) => tracing::warn!(sandbox = %id, error = %err, "skipping an unreadable sandbox record"),
            }
        }
        out
    }

    pub fn delete(paths: &Paths, id: &str) -> Result<()> {
        let dir = paths.sandbox(id);
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(CriError::io("remove the sandbox directory", dir.path())(e))
            }
            _ => Ok(()),
        }
    }
}

/// Every selector label must be present with the same value.
pub(crate) fn labels_match(
    labels: &std::collections::HashMap<String, String>,
    selector: &std::collections::HashMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Temp file in the same directory → fsync → rename, so a crash leaves the old or the new file.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::base::fs::write_atomic(path, bytes, crate::base::fs::Durability::Synced, None)
        .map_err(CriError::io("write", path))
}

/// A new random 64-hex-digit ID, the shape the kubelet and crictl expect.
pub(crate) fn new_id() -> Result<String> {
    let mut buf = [0u8; 32];
    let path = Path::new("/dev/urandom");
    let mut f = fs::File::open(path).map_err(CriError::io("open", path))?;
    io::Read::read_exact(&mut f, &mut buf).map_err(CriError::io("read", path))?;
    Ok(hex::encode(buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kboot_cri::v1::{PodSandboxMetadata, PodSandboxStateValue};

    fn sandbox(labels: &[(&str, &str)], ready: bool) -> Sandbox {
        Sandbox {
            id: new_id().unwrap(),
            config: PodSandboxConfig {
                metadata: Some(PodSandboxMetadata {
                    name: "web".into(),
                    uid: "u1".into(),
                    namespace: "ns".into(),
                    attempt: 2,
                }),
                labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                annotations: [("a/b".to_string(), "x=y, z".to_string())].into(),
                ..Default::default()
            },
            state: SandboxState {
                created_at: 42,
                ready,
                ips: vec!["10.1.0.2".into(), "fd00::2".into()],
                ..Default::default()
            },
        }
    }

    #[test]
    fn sandbox_record_round_trips_config_exactly() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = Paths::under(tmp.path());
        let s = sandbox(&[("io.kubernetes.pod.uid", "u1")], true);
        s.save(&paths).unwrap();
        let back = Sandbox::load(&paths, &s.id).unwrap();
        assert_eq!(back.config, s.config);
        assert_eq!(back.status(), s.status());
        assert_eq!(Sandbox::load_all(&paths).len(), 1);
        Sandbox::delete(&paths, &s.id).unwrap();
        Sandbox::delete(&paths, &s.id).unwrap();
        assert!(Sandbox::load_all(&paths).is_empty());
    }

    #[test]
    fn sandbox_status_reports_first_ip_then_additional() {
        let st = sandbox(&[], true).status();
        let net = st.network.unwrap();
        assert_eq!(net.ip, "10.1.0.2");
        assert_eq!(net.additional_ips, vec![PodIp { ip: "fd00::2".into() }]);
    }

    #[test]
    fn sandbox_filter_by_id_prefix_state_and_labels() {
        let s = sandbox(&[("app", "web"), ("tier", "front")], false);
        let f = |id: &str, state: Option<PodSandboxState>, sel: &[(&str, &str)]| PodSandboxFilter {
            id: id.into(),
            state: state.map(|s| PodSandboxStateValue { state: s as i32 }),
            label_selector: sel.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        assert!(s.matches(&f("", None, &[])));
        assert!(s.matches(&f(&s.id[..8], None, &[])));
        assert!(!s.matches(&f("zz", None, &[])));
        assert!(s.matches(&f("", Some(PodSandboxState::SandboxNotready), &[("app", "web")])));
        assert!(!s.matches(&f("", Some(PodSandboxState::SandboxReady), &[])));
        assert!(!s.matches(&f("", None, &[("app", "db")])));
        assert!(!s.matches(&f("", None, &[("missing", "")])));
    }
}
