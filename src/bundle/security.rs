//! A container's security settings on its spec: capabilities, masked and read-only paths,
//! no-new-privileges, seccomp, supplementary groups, a read-only root. The defaults are
//! containerd's (and Docker's) for unprivileged containers; `privileged` lifts them all.
//! `build_spec` applies the Compose-level subset; the CRI applies a full [`Security`].

use oci_spec::runtime::{Capability, LinuxCapabilities, LinuxCapabilitiesBuilder, Spec};

use super::seccomp::{self, SeccompProfile};
use super::{BundleError, Host, Result};
use crate::plan::compose::parse_capability;

/// containerd's default capability set for unprivileged containers (Docker's too).
pub const DEFAULT_CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// containerd's masked and read-only paths for unprivileged containers.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
pub const READONLY_PATHS: &[&str] = &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// What a CRI `LinuxContainerSecurityContext` asks for, in spec terms.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Security {
    pub privileged: bool,
    /// Capability names without `CAP_`, upper case; `ALL` means every one the host has.
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// Replaces the default masked paths when non-empty (CRI cannot tell empty from unset).
    pub masked_paths: Vec<String>,
    pub readonly_paths: Vec<String>,
    pub no_new_privileges: bool,
    pub seccomp: SeccompProfile,
    /// Supplementary groups, in order (the image's groups of the user, then the request's).
    pub additional_gids: Vec<u32>,
    pub readonly_rootfs: bool,
}

/// The capability set: everything the host has when privileged; else containerd's rule:
/// `ALL` in add starts from every capability, `ALL` in drop from none, then the named adds
/// and drops. Only capabilities in the host's bounding set are kept (root here lacks some).
pub fn capability_set(privileged: bool, add: &[String], drop: &[String], host: &Host) -> Vec<Capability> {
    if privileged {
        return host.bounding_caps.clone();
    }
    let is_all = |c: &String| c.eq_ignore_ascii_case("ALL");
    let mut caps: Vec<Capability> = if add.iter().any(is_all) {
        host.bounding_caps.clone()
    } else if drop.iter().any(is_all) {
        Vec::new()
    } else {
        DEFAULT_CAPS.iter().filter_map(|c| parse_capability(c)).collect()
    };
    for c in add.iter().filter(|c| !is_all(c)).filter_map(|c| parse_capability(c)) {
        if !caps.contains(&c) {
            caps.push(c);
        }
    }
    let dropped: Vec<Capability> = drop
        .iter()
        .filter(|c| !is_all(c))
        .filter_map(|c| parse_capability(c))
        .collect();
    caps.retain(|c| !dropped.contains(c) && host.bounding_caps.contains(c));
    caps
}

/// The spec's capability sets. Unprivileged containers get no inheritable or ambient
/// capabilities (as containerd since GHSA-f3fp-gc8g-vw66): a non-root user keeps none.
pub fn capabilities(
    privileged: bool,
    caps: &[Capability],
) -> std::result::Result<LinuxCapabilities, oci_spec::OciSpecError> {
    let set: oci_spec::runtime::Capabilities = caps.iter().copied().collect();
    let inheritable = if privileged { set.clone() } else { Default::default() };
    LinuxCapabilitiesBuilder::default()
        .bounding(set.clone())
        .effective(set.clone())
        .permitted(set)
        .inheritable(inheritable.clone())
        .ambient(inheritable)
        .build()
}

/// Applies `sec` to a spec built by `build_spec` (whose own defaults it replaces).
pub fn apply(spec: &mut Spec, sec: &Security, host: &Host, service: &str) -> Result<()> {
    let spec_err = |source| BundleError::Spec {
        service: service.to_owned(),
        step: "security context",
        source,
    };
    let caps = capability_set(sec.privileged, &sec.cap_add, &sec.cap_drop, host);
    let seccomp = if sec.privileged {
        None
    } else {
        seccomp::resolve(&sec.seccomp, &caps).map_err(|source| BundleError::Seccomp {
            service: service.to_owned(),
            source,
        })?
    };
    if let Some(process) = spec.process_mut() {
        process.set_capabilities(Some(capabilities(sec.privileged, &caps).map_err(spec_err)?));
        // libcontainer loads the filter before dropping capabilities only when the field
        // is unset; with `false` it would load it unprivileged and without NNP (EACCES).
        process.set_no_new_privileges(sec.no_new_privileges.then_some(true));
        let mut user = process.user().clone();
        user.set_additional_gids((!sec.additional_gids.is_empty()).then(|| sec.additional_gids.clone()));
        process.set_user(user);
    }
    if let Some(linux) = spec.linux_mut() {
        let list = |given: &[String], default: &[&str]| -> Vec<String> {
            if sec.privileged {
                Vec::new()
            } else if given.is_empty() {
                default.iter().map(|s| s.to_string()).collect()
            } else {
                given.to_vec()
            }
        };
        linux.set_masked_paths(Some(list(&sec.masked_paths, MASKED_PATHS)));
        linux.set_readonly_paths(Some(list(&sec.readonly_paths, READONLY_PATHS)));
        linux.set_seccomp(seccomp);
    }
    if sec.readonly_rootfs {
        if let Some(root) = spec.root_mut() {
            root.set_readonly(Some(true));
        }
    }
    Ok(())
}
