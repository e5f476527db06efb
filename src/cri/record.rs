//! What a CRI container is on disk: a directory `Paths::container(<id>)` holding the
//! kubelet's config as given (protobuf) and kboot's record (JSON); its phase is what the
//! shim's records say. The CRI views of it (summary, status, filter) are read from these.

use std::fs;
use std::path::PathBuf;

use kboot_cri::v1::{Container, ContainerConfig, ContainerFilter, ContainerState, ContainerStatus, ImageSpec};
use prost::Message;
use serde::{Deserialize, Serialize};

use super::error::{CriError, Result};
use super::sandbox::{labels_match, write_atomic};
use crate::shim::record::{self, ExitRecord, ShimRecord};
use crate::state::{ContainerDir, Paths};

/// kboot's side of a CRI container.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ContainerRecord {
    pub sandbox_id: String,
    /// The store reference the image resolved to, and its ID (config digest).
    pub image: String,
    pub image_id: String,
    pub created_at: i64,
    /// `log_directory/log_path`, when the kubelet asked for a log.
    pub log_path: Option<PathBuf>,
    /// The container's cgroup path (cgroupfs), for stats.
    #[serde(default)]
    pub cgroup: String,
    /// The identity its first process runs as (reported in `ContainerStatus.user`).
    #[serde(default)]
    pub user: Option<RunUser>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RunUser {
    pub uid: u32,
    pub gid: u32,
    /// The primary gid first, then the supplementary groups.
    pub groups: Vec<u32>,
}

#[derive(Debug, Clone)]
pub(crate) struct CriContainer {
    pub id: String,
    pub config: ContainerConfig,
    pub record: ContainerRecord,
}

/// What the shim's records say.
#[derive(Debug, Clone)]
pub(crate) enum Phase {
    Created,
    Running(ShimRecord),
    Exited(ExitRecord),
}

fn ms_to_ns(ms: Option<u64>) -> i64 {
    ms.and_then(|m| i64::try_from(m).ok())
        .map_or(0, |m| m.saturating_mul(1_000_000))
}

impl CriContainer {
    pub fn dir(&self, paths: &Paths) -> ContainerDir {
        paths.container(&self.id)
    }

    pub fn phase(&self, paths: &Paths) -> Phase {
        if let Some(exit) = record::read_exit(paths, &self.id) {
            return Phase::Exited(exit);
        }
        match record::read_running(paths, &self.id) {
            Some(rec) if rec.is_alive() => Phase::Running(rec),
            // A shim that died without an exit record (SIGKILL): the container is gone too.
            Some(rec) => Phase::Exited(ExitRecord {
                exit_code: 255,
                error: Some("the shim died without recording the exit".into()),
                started_at_ms: rec.started_at_ms,
                ..Default::default()
            }),
            None => Phase::Created,
        }
    }

    pub(super) fn state(phase: &Phase) -> ContainerState {
        match phase {
            Phase::Created => ContainerState::ContainerCreated,
            Phase::Running(_) => ContainerState::ContainerRunning,
            Phase::Exited(_) => ContainerState::ContainerExited,
        }
    }

    fn image_spec(&self) -> Option<ImageSpec> {
        Some(ImageSpec {
            image: self.record.image.clone(),
            ..Default::default()
        })
    }

    /// The ListContainers entry, in `phase` (the server's, from memory).
    pub fn summary(&self, phase: &Phase) -> Container {
        Container {
            id: self.id.clone(),
            pod_sandbox_id: self.record.sandbox_id.clone(),
            metadata: self.config.metadata.clone(),
            image: self.image_spec(),
            image_ref: self.record.image_id.clone(),
            state: Self::state(phase) as i32,
            created_at: self.record.created_at,
            labels: self.config.labels.clone(),
            annotations: self.config.annotations.clone(),
            image_id: self.record.image_id.clone(),
        }
    }

    /// The ContainerStatus, in `phase` (the server's, from memory).
    pub fn status(&self, phase: Phase) -> ContainerStatus {
        let mut st = ContainerStatus {
            id: self.id.clone(),
            metadata: self.config.metadata.clone(),
            state: Self::state(&phase) as i32,
            created_at: self.record.created_at,
            image: self.image_spec(),
            image_ref: self.record.image_id.clone(),
            image_id: self.record.image_id.clone(),
            labels: self.config.labels.clone(),
            annotations: self.config.annotations.clone(),
            mounts: self.config.mounts.clone(),
            log_path: self
                .record
                .log_path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            user: self.record.user.as_ref().map(|u| kboot_cri::v1::ContainerUser {
                linux: Some(kboot_cri::v1::LinuxContainerUser {
                    uid: i64::from(u.uid),
                    gid: i64::from(u.gid),
                    supplemental_groups: u.groups.iter().map(|g| i64::from(*g)).collect(),
                }),
            }),
            ..Default::default()
        };
        match phase {
            Phase::Created => {}
            Phase::Running(rec) => st.started_at = ms_to_ns(rec.started_at_ms),
            Phase::Exited(exit) => {
                st.started_at = ms_to_ns(exit.started_at_ms);
                st.finished_at = ms_to_ns(Some(exit.finished_at_ms));
                st.exit_code = exit.exit_code;
                st.reason = if exit.oom_killed {
                    "OOMKilled"
                } else if exit.error.is_some() {
                    "StartError"
                } else if exit.exit_code == 0 {
                    "Completed"
                } else {
                    "Error"
                }
                .into();
                st.message = exit.error.unwrap_or_default();
            }
        }
        st
    }
    /// Whether the container in `phase` passes the filter.
    pub fn matches(&self, phase: &Phase, f: &ContainerFilter) -> bool {
        (f.id.is_empty() || self.id.starts_with(&f.id))
            && (f.pod_sandbox_id.is_empty() || self.record.sandbox_id.starts_with(&f.pod_sandbox_id))
            && f.state.as_ref().is_none_or(|s| s.state == Self::state(phase) as i32)
            && labels_match(&self.config.labels, &f.label_selector)
    }

    pub fn save(&self, paths: &Paths) -> Result<()> {
        let dir = self.dir(paths);
        fs::create_dir_all(&dir).map_err(CriError::io("create the container directory", dir.path()))?;
        write_atomic(&dir.cri_config(), &self.config.encode_to_vec())?;
        let rec = serde_json::to_vec_pretty(&self.record).map_err(|e| CriError::DecodeRecord {
            path: dir.cri_record(),
            source: e.into(),
        })?;
        write_atomic(&dir.cri_record(), &rec)
    }

    /// Every CRI container on disk (directories without a CRI record belong to plans).
    pub fn load_all(paths: &Paths) -> Vec<Self> {
        let Ok(entries) = fs::read_dir(paths.containers()) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            let dir = paths.container(&id);
            let (Ok(cfg), Ok(rec)) = (fs::read(dir.cri_config()), fs::read(dir.cri_record())) else {
                continue;
            };
            match (ContainerConfig::decode(cfg.as_slice()), serde_json::from_slice(&rec)) {
                (Ok(config), Ok(record)) => out.push(Self { id, config, record }),
                _ => tracing::warn!(container = %id, "skipping an unreadable CRI container record"),
            }
        }
        out
    }
}
