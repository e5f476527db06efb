//! `ContainerStats`: CPU and memory from the container's cgroup files (v1 here, v2 through
//! [`crate::cgroups::v2`]).

use std::path::Path;

use super::record::CriContainer;
use crate::state::Paths;

impl CriContainer {
    /// CPU and memory from the container's cgroup files, v1 or v2 (zero before it starts).
    pub fn stats(&self, paths: &Paths) -> kboot_cri::v1::ContainerStats {
        use kboot_cri::v1::{
            ContainerAttributes, CpuUsage, FilesystemIdentifier, FilesystemUsage, MemoryUsage, UInt64Value,
        };
        let root = Path::new(crate::cgroups::ROOT);
        let (cpu, usage, working_set) = if crate::cgroups::Layout::probe().is_unified() {
            let u = crate::cgroups::v2::usage(&crate::cgroups::v2::dir(root, &self.record.cgroup));
            (
                u.cpu_ns.unwrap_or(0),
                u.memory_bytes.unwrap_or(0),
                u.working_set_bytes.unwrap_or(0),
            )
        } else {
            let v1 = |ctrl: &str| root.join(ctrl).join(self.record.cgroup.trim_start_matches('/'));
            let read = |ctrl: &str, file: &str| crate::cgroups::read_u64(&v1(ctrl).join(file)).unwrap_or(0);
            let inactive_file =
                crate::cgroups::keyed(&v1("memory").join("memory.stat"), "total_inactive_file").unwrap_or(0);
            let usage = read("memory", "memory.usage_in_bytes");
            (
                read("cpuacct", "cpuacct.usage"),
                usage,
                usage.saturating_sub(inactive_file),
            )
        };
        let now = super::now_nanos();
        kboot_cri::v1::ContainerStats {
            attributes: Some(ContainerAttributes {
                id: self.id.clone(),
                metadata: self.config.metadata.clone(),
                labels: self.config.labels.clone(),
                annotations: self.config.annotations.clone(),
            }),
            cpu: Some(CpuUsage {
                timestamp: now,
                usage_core_nano_seconds: Some(UInt64Value { value: cpu }),
                ..Default::default()
            }),
            memory: Some(MemoryUsage {
                timestamp: now,
                working_set_bytes: Some(UInt64Value { value: working_set }),
                usage_bytes: Some(UInt64Value { value: usage }),
                ..Default::default()
            }),
            writable_layer: Some(FilesystemUsage {
                timestamp: now,
                fs_id: Some(FilesystemIdentifier {
                    mountpoint: self.dir(paths).path().display().to_string(),
                }),
                used_bytes: Some(UInt64Value { value: 0 }),
                inodes_used: Some(UInt64Value { value: 0 }),
            }),
            ..Default::default()
        }
    }
}
