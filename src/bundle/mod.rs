//! Image config + service → OCI runtime spec (`config.json`) that libcontainer,
//! runc and crun all run unchanged.
//!
//! The host facts that shape a spec (the capability bounding set, the device
//! nodes) are probed once into [`Host`] and passed in, so the mapping is a pure
//! function tested without root.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, Linux, LinuxBuilder, LinuxCpuBuilder, LinuxDevice, LinuxDeviceBuilder, LinuxDeviceCgroup,
    LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceBuilder,
    LinuxNamespaceType, LinuxResources, LinuxResourcesBuilder, Mount, MountBuilder, Process, ProcessBuilder,
    RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use crate::inroot::{passwd, InRootError, RootFs};
use crate::plan::compose::parse_capability;
use crate::plan::{Propagation, Service};

pub mod images;
mod mounts;
pub mod seccomp;
pub mod security;
pub mod userns;

pub use images::{ImageError, ImageSource, LocalImages, PreparedImage};
pub use mounts::{ensure_shared, prepare_volumes};
pub use seccomp::SeccompProfile;
pub use security::Security;

/// The spec could not be built or written. Caller mistakes (a missing
/// entrypoint, an unknown user) name the service and what to change.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("service `{service}`: no command to run: the image has no entrypoint or cmd; set `command:`")]
    NoCommand { service: String },
    #[error("service `{service}`: entrypoint `{program}` not found in the image (looked in {searched})")]
    EntrypointNotFound {
        service: String,
        program: String,
        searched: String,
    },
    #[error("service `{service}`: user `{user}` not found in the image's /etc/passwd or /etc/group; use a numeric uid[:gid]")]
    UnknownUser { service: String, user: String },
    // The cause is in the message and not in the chain (not named `source`): the CRI
    // passes only the message on, and a chain would print it twice.
    #[error("service `{service}`: {error}")]
    ImageFile { service: String, error: InRootError },
    #[error("service `{service}`: device {}: {source}", path.display())]
    Device {
        service: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("read the host's capability bounding set from /proc/self/status")]
    ReadCapBnd(#[source] std::io::Error),
    #[error("build the runtime spec for `{service}` ({step}): {source}")]
    Spec {
        service: String,
        step: &'static str,
        #[source]
        source: oci_spec::OciSpecError,
    },
    #[error("service `{service}`: {source}")]
    Seccomp {
        service: String,
        #[source]
        source: seccomp::SeccompError,
    },
    #[error("write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("prepare volume {}: {step}", path.display())]
    Volume {
        path: PathBuf,
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl BundleError {
    /// True when the request is at fault (no command, an unknown user or entrypoint,
    /// a missing device, a value the spec refuses, a bad seccomp profile): asking
    /// again unchanged fails again. False for failures of this host (I/O).
    pub fn is_bad_request(&self) -> bool {
        match self {
            Self::NoCommand { .. }
            | Self::EntrypointNotFound { .. }
            | Self::UnknownUser { .. }
            | Self::Device { .. }
            | Self::Spec { .. }
            | Self::Seccomp { .. } => true,
            // A file the image got wrong (a link out of it, a FIFO, too large) is the
            // image's fault; failing to open the rootfs or to read it is this host's.
            Self::ImageFile { error, .. } => !matches!(error, InRootError::OpenRoot { .. } | InRootError::Read { .. }),
            Self::ReadCapBnd(_) | Self::Write { .. } | Self::Volume { .. } => false,
        }
    }
}

type Result<T> = std::result::Result<T, BundleError>;

/// What the image says about how to run it (the OCI image config's `config`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageDefaults {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}

impl From<&oci_spec::image::ImageConfiguration> for ImageDefaults {
    fn from(c: &oci_spec::image::ImageConfiguration) -> Self {
        let Some(cfg) = c.config() else {
            return Self::default();
        };
        Self {
            entrypoint: cfg.entrypoint().clone().unwrap_or_default(),
            cmd: cfg.cmd().clone().unwrap_or_default(),
            env: cfg.env().clone().unwrap_or_default(),
            working_dir: cfg.working_dir().clone().filter(|w| !w.is_empty()),
            user: cfg.user().clone().filter(|u| !u.is_empty()),
        }
    }
}

/// Host facts a spec depends on.
#[derive(Debug, Clone)]
pub struct Host {
    /// Capabilities in this process's bounding set: a privileged container gets
    /// exactly these (root here lacks CAP_SYS_RESOURCE, so "all" would fail).
    pub bounding_caps: Vec<Capability>,
    /// Host device nodes a privileged container sees in its tmpfs `/dev`.
    pub devices: Vec<LinuxDevice>,
    /// The host's cgroup layout: what an unprivileged container's `/sys/fs/cgroup` is.
    pub cgroups: crate::cgroups::Layout,
}

impl Host {
    /// Reads `/proc/self/status` and walks `/dev`.
    pub fn probe() -> Result<Self> {
        let status = fs::read_to_string("/proc/self/status").map_err(BundleError::ReadCapBnd)?;
        Ok(Self {
            bounding_caps: caps_from_status(&status),
            devices: host_devices(Path::new("/dev")),
            cgroups: crate::cgroups::Layout::probe(),
        })
    }
}

/// The capabilities named by the `CapBnd` line of a `/proc/<pid>/status` text.
pub fn caps_from_status(status: &str) -> Vec<Capability> {
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .unwrap_or(0);
    caps::all()
        .into_iter()
        .filter(|c| mask & (1u64 << c.index()) != 0)
        .filter_map(|c| parse_capability(&c.to_string()))
        .collect()
}

/// Device nodes libcontainer creates by itself in every container's `/dev`
/// (or replaces, as `ptmx`): listing them again would clash.
const DEFAULT_DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty", "console", "ptmx"];

/// Character and block devices under `dev` (two levels, as `/dev/net/tun`),
/// skipping `pts`, `shm`, `mqueue` and the defaults libcontainer makes.
pub fn host_devices(dev: &Path) -> Vec<LinuxDevice> {
    let mut out = Vec::new();
    let mut dirs = vec![(dev.to_path_buf(), 0)];
    while let Some((dir, depth)) = dirs.pop() {
        let Ok(entries) = fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let Ok(meta) = e.path().symlink_metadata() else {
                continue;
            };
            let name = e.file_name().to_string_lossy().into_owned();
            let ft = meta.file_type();
            if ft.is_dir() && depth < 2 && !["pts", "shm", "mqueue"].contains(&name.as_str()) {
                dirs.push((e.path(), depth + 1));
                continue;
            }
            if depth == 0 && DEFAULT_DEVICES.contains(&name.as_str()) {
                continue;
            }
            let typ = if ft.is_char_device() {
                LinuxDeviceType::C
            } else if ft.is_block_device() {
                LinuxDeviceType::B
            } else {
                continue;
            };
            let rel = e
                .path()
                .strip_prefix(dev)
                .map(|r| Path::new("/dev").join(r))
                .unwrap_or(e.path());
            if let Some(d) = device_node(rel, typ, &meta) {
                out.push(d);
            }
        }
    }
    out.sort_by(|a, b| a.path().cmp(b.path()));
    out
}

fn device_node(path: PathBuf, typ: LinuxDeviceType, meta: &fs::Metadata) -> Option<LinuxDevice> {
    let rdev = meta.rdev();
    LinuxDeviceBuilder::default()
        .path(path)
        .typ(typ)
        .major(i64::from(nix::sys::stat::major(rdev) as u32))
        .minor(i64::from(nix::sys::stat::minor(rdev) as u32))
        .file_mode(meta.mode() & 0o7777)
        .uid(meta.uid())
        .gid(meta.gid())
        .build()
        .ok()
}

/// Used when neither the image nor the service sets `PATH`.
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Everything a spec is made from.
#[derive(Debug, Clone, Copy)]
pub struct BundleRequest<'a> {
    pub service: &'a Service,
    pub image: &'a ImageDefaults,
    /// The container's (writable) root filesystem.
    pub rootfs: &'a Path,
    /// Absolute cgroup path, e.g. `/kboot/etcd`.
    pub cgroups_path: &'a str,
}

/// Builds the runtime spec. Pure apart from reading the rootfs's `/etc/passwd`,
/// `/etc/group` and checking that the entrypoint exists there.
pub fn build_spec(req: &BundleRequest<'_>, host: &Host) -> Result<Spec> {
    let svc = req.service;
    let caps = security::capability_set(svc.privileged, &svc.cap_add, &[], host);
    let process = process_spec(req, &caps)?;
    let linux = linux_spec(req, &caps, host)?;
    let root = RootBuilder::default()
        .path(req.rootfs)
        .readonly(false)
        .build()
        .map_err(spec_err(svc, "root"))?;
    let mounts = mounts(svc, &host.cgroups, req.cgroups_path).map_err(spec_err(svc, "mounts"))?;
    SpecBuilder::default()
        .version("1.0.2")
        .root(root)
        .hostname(svc.name.clone())
        .process(process)
        .mounts(mounts)
        .linux(linux)
        .build()
        .map_err(spec_err(svc, "spec"))
}

/// The error of one step of [`build_spec`]: the spec refused a value.
fn spec_err<'a>(svc: &'a Service, step: &'static str) -> impl Fn(oci_spec::OciSpecError) -> BundleError + 'a {
    move |source| BundleError::Spec {
        service: svc.name.clone(),
        step,
        source,
    }
}

/// The process: command line (checked against the image), environment, user,
/// working directory and capabilities.
fn process_spec(req: &BundleRequest<'_>, caps: &[Capability]) -> Result<Process> {
    let svc = req.service;
    let spec_err = spec_err(svc, "process");
    let args = command_line(svc, req.image)?;
    let env = environment(svc, req.image);
    let path_var = env.iter().find_map(|e| e.strip_prefix("PATH=")).unwrap_or("");
    let image_file = |error| BundleError::ImageFile {
        service: svc.name.clone(),
        error,
    };
    // Every look into the image goes through the in-rootfs reader (links resolved inside).
    let rootfs = RootFs::open(req.rootfs).map_err(image_file)?;
    check_executable(&rootfs, &svc.name, &args[0], path_var)?;

    let (uid, gid) = match svc.user.as_deref().or(req.image.user.as_deref()) {
        None => (0, 0),
        Some(u) => passwd::resolve_user(&rootfs, u)
            .map_err(image_file)?
            .ok_or_else(|| BundleError::UnknownUser {
                service: svc.name.clone(),
                user: u.to_owned(),
            })?,
    };
    let capabilities = security::capabilities(svc.privileged, caps).map_err(&spec_err)?;
    let cwd = svc
        .working_dir
        .clone()
        .or_else(|| req.image.working_dir.clone())
        .unwrap_or_else(|| "/".into());
    let mut process = ProcessBuilder::default()
        .terminal(false)
        .args(args)
        .env(env)
        .cwd(cwd)
        .user(UserBuilder::default().uid(uid).gid(gid).build().map_err(&spec_err)?)
        .capabilities(capabilities)
        .rlimits(Vec::new())
        .build()
        .map_err(&spec_err)?;
    // Unset, not `false`: with a seccomp profile, libcontainer then loads the filter while
    // it still holds CAP_SYS_ADMIN (with `false` it would try after dropping it: EACCES).
    process.set_no_new_privileges(None);
    Ok(process)
}

/// The `linux` section: namespaces, cgroup path, resources and devices, and the
/// confinement of an unprivileged container (masked paths, seccomp).
fn linux_spec(req: &BundleRequest<'_>, caps: &[Capability], host: &Host) -> Result<Linux> {
    let svc = req.service;
    let spec_err = spec_err(svc, "linux");
    let (devices, device_rules) = devices(svc, host)?;
    let shared = svc.volumes.iter().any(|v| v.propagation == Propagation::Shared);
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces(svc, host)?)
        .cgroups_path(PathBuf::from(req.cgroups_path))
        .resources(resources(svc, device_rules)?)
        .devices(devices);
    if svc.privileged {
        linux = linux
            .masked_paths(Vec::<String>::new())
            .readonly_paths(Vec::<String>::new());
    } else {
        linux = linux
            .masked_paths(security::MASKED_PATHS.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .readonly_paths(
                security::READONLY_PATHS
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>(),
            )
            // Compose has no `security_opt`: every unprivileged service gets the default profile.
            .seccomp(seccomp::default_profile(caps));
    }
    if shared {
        // libcontainer 0.7 ignores per-mount `rshared`; only a shared rootfs
        // propagation lets mounts made inside reach the host (machine-notes P5).
        linux = linux.rootfs_propagation("shared");
    }
    linux.build().map_err(spec_err)
}

/// The namespaces a container gets: its own mount, IPC and UTS always; PID and
/// network unless it shares the host's; cgroup when unprivileged on cgroup v2.
fn namespaces(svc: &Service, host: &Host) -> Result<Vec<LinuxNamespace>> {
    let mut namespaces = vec![
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
    ];
    if !svc.pid_host {
        namespaces.push(LinuxNamespaceType::Pid);
    }
    if !svc.network_host {
        namespaces.push(LinuxNamespaceType::Network);
    }
    // On cgroup v2 an unprivileged container gets a cgroup namespace, so the cgroup2 it
    // mounts at /sys/fs/cgroup is its own cgroup (as runc, containerd and Docker do there).
    if !svc.privileged && host.cgroups.is_unified() {
        namespaces.push(LinuxNamespaceType::Cgroup);
    }
    namespaces
        .into_iter()
        .map(|t| LinuxNamespaceBuilder::default().typ(t).build())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(spec_err(svc, "namespaces"))
}

/// The device nodes a container sees (all of the host's when privileged, plus
/// the service's `devices:`) and the device cgroup rules that allow them.
fn devices(svc: &Service, host: &Host) -> Result<(Vec<LinuxDevice>, Vec<LinuxDeviceCgroup>)> {
    let spec_err = spec_err(svc, "devices");
    let mut devices = if svc.privileged {
        host.devices.clone()
    } else {
        Vec::new()
    };
    let mut device_rules = vec![LinuxDeviceCgroupBuilder::default()
        .allow(svc.privileged)
        .access("rwm")
        .build()
        .map_err(&spec_err)?];
    for d in &svc.devices {
        let meta = fs::metadata(&d.host).map_err(|source| BundleError::Device {
            service: svc.name.clone(),
            path: d.host.clone(),
            source,
        })?;
        let typ = if meta.file_type().is_block_device() {
            LinuxDeviceType::B
        } else {
            LinuxDeviceType::C
        };
        let node = device_node(d.container.clone(), typ, &meta).ok_or_else(|| BundleError::Device {
            service: svc.name.clone(),
            path: d.host.clone(),
            source: std::io::Error::other("not a device node"),
        })?;
        device_rules.push(
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(typ)
                .major(node.major())
                .minor(node.minor())
                .access(d.permissions.clone())
                .build()
                .map_err(&spec_err)?,
        );
        devices.retain(|x| x.path() != node.path());
        devices.push(node);
    }
    Ok((devices, device_rules))
}

/// Resources: the device rules, the memory limit and the CPU quota.
fn resources(svc: &Service, device_rules: Vec<LinuxDeviceCgroup>) -> Result<LinuxResources> {
    let spec_err = spec_err(svc, "resources");
    let mut resources = LinuxResourcesBuilder::default().devices(device_rules);
    if let Some(limit) = svc.mem_limit {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        resources = resources.memory(LinuxMemoryBuilder::default().limit(limit).build().map_err(&spec_err)?);
    }
    if let Some(cpus) = svc.cpus {
        const PERIOD: u64 = 100_000;
        #[allow(clippy::cast_possible_truncation)]
        let quota = (cpus * PERIOD as f64).round() as i64;
        resources = resources.cpu(
            LinuxCpuBuilder::default()
                .period(PERIOD)
                .quota(quota)
                .build()
                .map_err(&spec_err)?,
        );
    }
    resources.build().map_err(spec_err)
}

/// Compose semantics: `entrypoint` replaces the image's entrypoint and drops
/// its cmd; `command` replaces the cmd.
fn command_line(svc: &Service, image: &ImageDefaults) -> Result<Vec<String>> {
    let (entrypoint, cmd) = match (&svc.entrypoint, &svc.command) {
        (Some(e), Some(c)) => (e.clone(), c.clone()),
        (Some(e), None) => (e.clone(), Vec::new()),
        (None, Some(c)) => (image.entrypoint.clone(), c.clone()),
        (None, None) => (image.entrypoint.clone(), image.cmd.clone()),
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() || args[0].is_empty() {
        return Err(BundleError::NoCommand {
            service: svc.name.clone(),
        });
    }
    Ok(args)
}

/// The image's environment, overridden by the service's; `PATH` always set.
fn environment(svc: &Service, image: &ImageDefaults) -> Vec<String> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for e in &image.env {
        let (k, v) = e.split_once('=').unwrap_or((e.as_str(), ""));
        if env.insert(k.to_owned(), v.to_owned()).is_none() {
            order.push(k.to_owned());
        }
    }
    for (k, v) in &svc.environment {
        if env.insert(k.clone(), v.clone()).is_none() {
            order.push(k.clone());
        }
    }
    let mut out: Vec<String> = Vec::new();
    if !env.contains_key("PATH") {
        out.push(DEFAULT_PATH.into());
    }
    out.extend(order.iter().map(|k| format!("{k}={}", env[k])));
    out
}

/// One spec mount.
fn mount(dst: &str, typ: &str, src: &str, opts: &[&str]) -> std::result::Result<Mount, oci_spec::OciSpecError> {
    MountBuilder::default()
        .destination(dst)
        .typ(typ)
        .source(src)
        .options(opts.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
}

fn mounts(
    svc: &Service,
    cgroups: &crate::cgroups::Layout,
    cgroups_path: &str,
) -> std::result::Result<Vec<Mount>, oci_spec::OciSpecError> {
    let m = mount;
    let mut out = vec![
        m("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        // A tmpfs /dev: never the host's (libcontainer rewrites /dev/ptmx and
        // symlinks in it, machine-notes P2); device nodes come from linux.devices.
        m(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        m(
            "/dev/pts",
            "devpts",
            "devpts",
            &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        )?,
        m(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        m("/dev/mqueue", "mqueue", "mqueue", &["nosuid", "noexec", "nodev"])?,
    ];
    if svc.privileged {
        out.push(m(
            "/sys",
            "bind",
            "/sys",
            &["rbind", "rw", "nosuid", "noexec", "nodev"],
        )?);
    } else {
        out.push(m("/sys", "sysfs", "sysfs", &["nosuid", "noexec", "nodev", "ro"])?);
        out.extend(cgroup_mounts(cgroups, cgroups_path)?);
    }
    for v in &svc.volumes {
        let prop = match v.propagation {
            Propagation::Shared => "rshared",
            Propagation::Slave => "rslave",
            Propagation::Private => "rprivate",
        };
        let src = v.source.to_string_lossy();
        let dst = v.target.to_string_lossy();
        out.push(m(
            &dst,
            "bind",
            &src,
            &["rbind", if v.read_only { "ro" } else { "rw" }, prop],
        )?);
    }
    Ok(out)
}

/// An unprivileged container's own cgroup at `/sys/fs/cgroup`, read-only, so runtimes that
/// size themselves from their cgroup (the JVM, Go's automaxprocs, .NET, Node) see their
/// limits. Privileged containers keep the host's `/sys` and with it every cgroup (kboot's
/// kubelet manages the pods' cgroups through it).
///
/// v2: a cgroup2 mount inside the container's cgroup namespace (libcontainer's `cgroup`
/// mount type; the `ro` option is honoured). v1: what runc does without a cgroup namespace
/// (Docker's default on v1): a tmpfs holding a read-only bind of the container's own
/// directory of each hierarchy. libcontainer's own v1 `cgroup` mount would ignore `ro` and
/// bind the supervisor's name=systemd cgroup, hence the explicit mounts.
fn cgroup_mounts(
    cgroups: &crate::cgroups::Layout,
    cgroups_path: &str,
) -> std::result::Result<Vec<Mount>, oci_spec::OciSpecError> {
    use crate::cgroups::Layout;
    let m = |dst: String, typ: &str, src: String, opts: &[&str]| mount(&dst, typ, &src, opts);
    let opts = ["nosuid", "noexec", "nodev", "relatime", "ro"];
    match cgroups {
        Layout::Unified => Ok(vec![m("/sys/fs/cgroup".into(), "cgroup", "cgroup".into(), &opts)?]),
        Layout::V1 { hierarchies } => {
            let mut out = vec![m(
                "/sys/fs/cgroup".into(),
                "tmpfs",
                "tmpfs".into(),
                &["nosuid", "noexec", "nodev", "mode=755", "size=64k"],
            )?];
            // The systemd driver's `slice:prefix:name` names a directory too.
            let dir = crate::cgroups::driver::fs_path(cgroups_path).unwrap_or_else(|_| cgroups_path.to_owned());
            let rel = dir.trim_start_matches('/');
            for h in hierarchies {
                out.push(m(
                    format!("/sys/fs/cgroup/{h}"),
                    "bind",
                    format!("{}/{h}/{rel}", crate::cgroups::ROOT),
                    &["bind", "nosuid", "noexec", "nodev", "ro"],
                )?);
            }
            Ok(out)
        }
    }
}

/// Fails early, with a message naming the service, when the program is not in
/// the image: a container that cannot exec is a confusing restart loop otherwise.
fn check_executable(rootfs: &RootFs, service: &str, program: &str, path_var: &str) -> Result<()> {
    // A path that cannot be resolved inside the image (a loop, a magic link) is not there.
    let found = |p: &Path| {
        rootfs
            .metadata(p)
            .ok()
            .flatten()
            .is_some_and(|m| m.is_file() && m.is_executable())
    };
    let (ok, searched) = if program.contains('/') {
        let p = if program.starts_with('/') {
            PathBuf::from(program)
        } else {
            Path::new("/").join(program)
        };
        (found(&p), program.to_owned())
    } else {
        let dirs: Vec<&str> = path_var.split(':').filter(|d| !d.is_empty()).collect();
        (
            dirs.iter().any(|d| found(&Path::new(d).join(program))),
            format!("PATH={path_var}"),
        )
    };
    if ok {
        Ok(())
    } else {
        Err(BundleError::EntrypointNotFound {
            service: service.to_owned(),
            program: program.to_owned(),
            searched,
        })
    }
}

/// Writes `<dir>/config.json` (temp file → fsync → rename) and returns its path.
pub fn write_config(dir: &Path, spec: &Spec) -> Result<PathBuf> {
    let path = crate::state::config_json(dir);
    let werr = |source| BundleError::Write {
        path: path.clone(),
        source,
    };
    let json = serde_json::to_vec_pretty(spec).map_err(|e| werr(std::io::Error::other(e)))?;
    // `run` rewrites every bundle; an unchanged one needs no second flush to disk (10 ms
    // and more on a busy disk, on every `run`). Compared as specs, not bytes: capability
    // sets are hash sets, serialised in a different order by every process.
    let unchanged = fs::read(&path)
        .ok()
        .and_then(|old| serde_json::from_slice::<Spec>(&old).ok())
        .is_some_and(|old| old == *spec);
    if unchanged {
        return Ok(path);
    }
    crate::base::fs::write_atomic(&path, &json, crate::base::fs::Durability::Synced, None).map_err(werr)?;
    Ok(path)
}

#[cfg(test)]
mod tests;
