//! Node configuration: kube-deploy's variables, from flags, the environment and
//! `/etc/kboot/config.toml`, with precedence flag > environment > file > default.
//!
//! Every value remembers where it came from, so `kboot plan` can say why a setting
//! is what it is.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::netdetect;
use super::version::{default_etcd_version, Family, KubeVersion, DEFAULT_FLANNEL_VERSION, DEFAULT_K8S_VERSION};
use crate::cgroups::{Driver, HostCgroups};
use crate::plan::RestartPolicy;

/// One configurable variable: its kube-deploy name (also the environment variable),
/// the `run`/`plan` flag, and the key in `config.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Key {
    K8sVersion,
    /// kboot's own: `modern` or `hyperkube` (env `KBOOT_FAMILY`).
    Family,
    EtcdVersion,
    FlannelVersion,
    FlannelNetwork,
    FlannelBackend,
    FlannelIpmasq,
    RestartPolicy,
    MasterIp,
    IpAddress,
    UseCni,
    UseContainerized,
    Arch,
    TimeoutForServices,
    /// kboot's own: `cgroupfs` or `systemd` (env `KBOOT_CGROUP_DRIVER`).
    CgroupDriver,
}

impl Key {
    pub const ALL: [Key; 15] = [
        Key::K8sVersion,
        Key::Family,
        Key::EtcdVersion,
        Key::FlannelVersion,
        Key::FlannelNetwork,
        Key::FlannelBackend,
        Key::FlannelIpmasq,
        Key::RestartPolicy,
        Key::MasterIp,
        Key::IpAddress,
        Key::UseCni,
        Key::UseContainerized,
        Key::Arch,
        Key::TimeoutForServices,
        Key::CgroupDriver,
    ];

    /// The environment variable (kube-deploy's name, so old habits keep working).
    pub fn env(self) -> &'static str {
        match self {
            Key::K8sVersion => "K8S_VERSION",
            Key::Family => "KBOOT_FAMILY",
            Key::EtcdVersion => "ETCD_VERSION",
            Key::FlannelVersion => "FLANNEL_VERSION",
            Key::FlannelNetwork => "FLANNEL_NETWORK",
            Key::FlannelBackend => "FLANNEL_BACKEND",
            Key::FlannelIpmasq => "FLANNEL_IPMASQ",
            Key::RestartPolicy => "RESTART_POLICY",
            Key::MasterIp => "MASTER_IP",
            Key::IpAddress => "IP_ADDRESS",
            Key::UseCni => "USE_CNI",
            Key::UseContainerized => "USE_CONTAINERIZED",
            Key::Arch => "ARCH",
            Key::TimeoutForServices => "TIMEOUT_FOR_SERVICES",
            Key::CgroupDriver => "KBOOT_CGROUP_DRIVER",
        }
    }

    /// The key in `config.toml`: the variable name in lower case.
    pub fn file_key(self) -> String {
        match self {
            Key::Family => "family".to_string(),
            Key::CgroupDriver => "cgroup_driver".to_string(),
            k => k.env().to_ascii_lowercase(),
        }
    }

    /// The command-line flag.
    pub fn flag(self) -> &'static str {
        match self {
            Key::K8sVersion => "--k8s-version",
            Key::Family => "--family",
            Key::EtcdVersion => "--etcd-version",
            Key::FlannelVersion => "--flannel-version",
            Key::FlannelNetwork => "--flannel-network",
            Key::FlannelBackend => "--flannel-backend",
            Key::FlannelIpmasq => "--flannel-ipmasq",
            Key::RestartPolicy => "--restart",
            Key::MasterIp => "--master",
            Key::IpAddress => "--ip-address",
            Key::UseCni => "--use-cni",
            Key::UseContainerized => "--use-containerized",
            Key::Arch => "--arch",
            Key::TimeoutForServices => "--timeout-for-services",
            Key::CgroupDriver => "--cgroup-driver",
        }
    }
}

/// Where a value came from, highest precedence first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Flag,
    Env,
    File,
    Default,
    /// Found on the host (IP address of the default-route interface, machine architecture).
    Detected,
}

/// Raw values from one source, before validation.
pub type Layer = BTreeMap<Key, String>;

/// Reads the kube-deploy variables from an environment lookup (`std::env::var` in the binary).
pub fn env_layer(lookup: impl Fn(&str) -> Option<String>) -> Layer {
    Key::ALL
        .into_iter()
        .filter_map(|k| lookup(k.env()).filter(|v| !v.is_empty()).map(|v| (k, v)))
        .collect()
}

/// Reads `config.toml`. A missing file is an empty layer; an unknown key is an error
/// (a typo must not be silently ignored).
pub fn file_layer(path: &Path) -> Result<Layer, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Layer::new()),
        Err(source) => {
            return Err(ConfigError::ReadFile {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let table: toml::Table = text.parse().map_err(|source| ConfigError::ParseFile {
        path: path.to_path_buf(),
        source,
    })?;
    let mut layer = Layer::new();
    for (name, value) in table {
        let key = Key::ALL
            .into_iter()
            .find(|k| k.file_key() == name)
            .ok_or_else(|| ConfigError::UnknownFileKey {
                path: path.to_path_buf(),
                key: name.clone(),
                known: Key::ALL.iter().map(|k| k.file_key()).collect::<Vec<_>>().join(", "),
            })?;
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => {
                return Err(ConfigError::FileValueType {
                    path: path.to_path_buf(),
                    key: name,
                    found: other.type_str().to_string(),
                })
            }
        };
        layer.insert(key, text);
    }
    Ok(layer)
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read {}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parse {}", path.display())]
    ParseFile {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("{}: unknown key `{key}` (known keys: {known})", path.display())]
    UnknownFileKey { path: PathBuf, key: String, known: String },
    #[error("{}: `{key}` must be a string, integer or boolean, not {found}", path.display())]
    FileValueType { path: PathBuf, key: String, found: String },
    #[error("{} / {} (from {from:?}): {message}", key.env(), key.flag())]
    Invalid { key: Key, from: Source, message: String },
    #[error("K8S_VERSION {version} is not supported; supported: {supported}")]
    UnsupportedVersion { version: String, supported: String },
    #[error("the {family} image family does not cover K8S_VERSION {version}: it covers v1.{lo}.x to v1.{hi}.x")]
    FamilyMismatch {
        family: Family,
        version: String,
        lo: u32,
        hi: u32,
    },
    #[error("a worker needs the master's address: pass --master IP (or set MASTER_IP)")]
    MissingMaster,
    #[error(
        "USE_CONTAINERIZED needs a kubelet that still has --containerized (hyperkube family, v1.15 or older); \
         kubelet {version} removed it"
    )]
    ContainerizedUnsupported { version: String },
    #[error(transparent)]
    DetectAddress(#[from] netdetect::DetectError),
}

/// Which node kboot brings up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Master,
    Worker,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "master" => Ok(Role::Master),
            "worker" => Ok(Role::Worker),
            _ => Err(format!("unknown role {s:?}: use master or worker")),
        }
    }
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Worker => "worker",
        }
    }
}

/// Flannel's backend types (`Backend.Type` in flannel's network config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlannelBackend {
    Udp,
    Vxlan,
    HostGw,
    Wireguard,
}

impl std::str::FromStr for FlannelBackend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "udp" => Ok(FlannelBackend::Udp),
            "vxlan" => Ok(FlannelBackend::Vxlan),
            "host-gw" => Ok(FlannelBackend::HostGw),
            "wireguard" => Ok(FlannelBackend::Wireguard),
            _ => Err(format!(
                "{s:?} is not a flannel backend: use udp, vxlan, host-gw or wireguard"
            )),
        }
    }
}

impl FlannelBackend {
    pub fn as_str(self) -> &'static str {
        match self {
            FlannelBackend::Udp => "udp",
            FlannelBackend::Vxlan => "vxlan",
            FlannelBackend::HostGw => "host-gw",
            FlannelBackend::Wireguard => "wireguard",
        }
    }
}

/// An IPv4 network in CIDR notation (`10.1.0.0/16`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl std::fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for Ipv4Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl std::str::FromStr for Ipv4Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not an IPv4 network such as 10.1.0.0/16");
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        if !(8..=28).contains(&prefix) {
            return Err(format!(
                "{s}: the prefix must be between /8 and /28 to leave room for /24 node subnets"
            ));
        }
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        if u32::from(addr) & !mask != 0 {
            return Err(format!(
                "{s}: host bits are set; did you mean {}/{prefix}?",
                Ipv4Addr::from(u32::from(addr) & mask)
            ));
        }
        Ok(Ipv4Cidr { addr, prefix })
    }
}

/// A value and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sourced<T> {
    pub value: T,
    pub source: Source,
}

/// The validated configuration a role is built from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeConfig {
    pub role: Role,
    pub k8s_version: KubeVersion,
    pub family: Family,
    pub etcd_version: String,
    pub flannel_version: String,
    pub flannel_network: Ipv4Cidr,
    pub flannel_backend: FlannelBackend,
    pub flannel_ipmasq: bool,
    #[serde(serialize_with = "ser_restart")]
    pub restart: RestartPolicy,
    /// The API server address workers and kubeconfigs use. On a master: its advertise address.
    pub master_ip: Ipv4Addr,
    /// This node's address: kubelet `--hostname-override` (the node name) and `--node-ip`.
    pub ip_address: Ipv4Addr,
    pub use_cni: bool,
    pub use_containerized: bool,
    pub arch: String,
    #[serde(serialize_with = "secs")]
    pub timeout_for_services: Duration,
    /// Who creates the containers' cgroups, kboot's and the kubelet's alike.
    #[serde(serialize_with = "ser_display")]
    pub cgroup_driver: Driver,
    /// The host has cgroup v2 only (detected; `plan` describes a node on a host like this
    /// one). On v1 and hybrid hosts the kubelet is told to accept cgroup v1.
    pub cgroup_unified: bool,
    /// Where every value came from.
    pub sources: BTreeMap<Key, Source>,
}

fn ser_restart<S: serde::Serializer>(p: &RestartPolicy, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(p)
}

fn ser_display<S: serde::Serializer>(d: &Driver, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(d)
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

pub use crate::plan::cluster::{CLUSTER_DNS, CLUSTER_DOMAIN, KUBERNETES_SERVICE_IP, SERVICE_CIDR};

/// Host facts the defaults depend on; injected so tests don't depend on the machine.
pub trait HostFacts {
    /// IPv4 address of the default-route interface.
    fn default_ipv4(&self) -> Result<Ipv4Addr, netdetect::DetectError>;
    /// Whether `ip` is assigned to one of this host's interfaces.
    fn has_address(&self, ip: Ipv4Addr) -> Result<bool, netdetect::DetectError>;
    /// `uname -m`.
    fn machine(&self) -> String;
    /// systemd as PID 1, cgroup v2: what the cgroup driver depends on.
    fn cgroups(&self) -> HostCgroups;
}

/// The running host: `/proc/net/route` and the interface list.
#[derive(Debug, Clone)]
pub struct RealHost {
    pub proc_root: PathBuf,
}

impl Default for RealHost {
    fn default() -> Self {
        Self {
            proc_root: PathBuf::from("/proc"),
        }
    }
}

impl HostFacts for RealHost {
    fn default_ipv4(&self) -> Result<Ipv4Addr, netdetect::DetectError> {
        netdetect::default_route_ipv4(&self.proc_root)
    }
    fn has_address(&self, ip: Ipv4Addr) -> Result<bool, netdetect::DetectError> {
        Ok(netdetect::host_ipv4_addresses()?.iter().any(|(_, a)| *a == ip))
    }
    fn machine(&self) -> String {
        nix::sys::utsname::uname()
            .map(|u| u.machine().to_string_lossy().into_owned())
            .unwrap_or_else(|_| std::env::consts::ARCH.to_string())
    }
    fn cgroups(&self) -> HostCgroups {
        HostCgroups::probe()
    }
}

/// kube-deploy's `host_platform`: the `uname -m` → image ARCH mapping.
pub fn arch_from_machine(machine: &str) -> Option<&'static str> {
    match machine {
        "x86_64" | "amd64" => Some("amd64"),
        "aarch64" | "arm64" => Some("arm64"),
        "ppc64le" => Some("ppc64le"),
        m if m.starts_with("arm") => Some("arm"),
        _ => None,
    }
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(format!("{s:?} is not a boolean: use true or false")),
    }
}

/// Checks that `IP_ADDRESS` belongs to this host (`run` does; `plan` may describe another node).
pub fn verify_ip_address(cfg: &NodeConfig, host: &dyn HostFacts) -> Result<(), ConfigError> {
    if host.has_address(cfg.ip_address)? {
        return Ok(());
    }
    Err(ConfigError::Invalid {
        key: Key::IpAddress,
        from: cfg.sources.get(&Key::IpAddress).copied().unwrap_or(Source::Default),
        message: format!(
            "{} is not assigned to any interface of this host; pick one of its addresses (`ip -4 addr`)",
            cfg.ip_address
        ),
    })
}

/// Checks that this host can use the cgroup driver asked for (`run` does; `plan` may
/// describe another node): systemd needs systemd as PID 1 and cgroup v2.
pub fn verify_cgroup_driver(cfg: &NodeConfig, host: &dyn HostFacts) -> Result<(), ConfigError> {
    cfg.cgroup_driver
        .check(host.cgroups())
        .map(drop)
        .map_err(|e| ConfigError::Invalid {
            key: Key::CgroupDriver,
            from: cfg.sources.get(&Key::CgroupDriver).copied().unwrap_or(Source::Default),
            message: e.to_string(),
        })
}

/// Merges the layers (flag > env > file) and validates every value, one setting group at a
/// time: the version and image family, the architecture, the pod network, the kubelet and
/// containers, the addresses.
pub fn resolve(
    role: Role,
    flags: &Layer,
    env: &Layer,
    file: &Layer,
    host: &dyn HostFacts,
) -> Result<NodeConfig, ConfigError> {
    let mut picked = Picked::merge(flags, env, file);
    let (k8s_version, family) = resolve_version(&picked)?;
    let arch = resolve_arch(&mut picked, host)?;
    let etcd_version = picked
        .raw(Key::EtcdVersion)
        .unwrap_or_else(|| default_etcd_version(&k8s_version, &arch).to_string());
    let network = resolve_network(&picked)?;
    let runtime = resolve_runtime(&mut picked, &k8s_version, family, host)?;
    let (ip_address, master_ip) = resolve_addresses(&mut picked, role, host)?;
    let mut sources = picked.sources;
    for key in Key::ALL {
        sources.entry(key).or_insert(Source::Default);
    }
    Ok(NodeConfig {
        role,
        k8s_version,
        family,
        etcd_version,
        flannel_version: network.version,
        flannel_network: network.cidr,
        flannel_backend: network.backend,
        flannel_ipmasq: network.ipmasq,
        restart: runtime.restart,
        master_ip,
        ip_address,
        use_cni: runtime.use_cni,
        use_containerized: runtime.use_containerized,
        arch,
        timeout_for_services: runtime.timeout_for_services,
        cgroup_driver: runtime.cgroup_driver,
        cgroup_unified: runtime.cgroup_unified,
        sources,
    })
}

/// The layers merged: each key's value from the highest layer that has it, and where
/// every value came from (defaults and detections are added as they are taken).
struct Picked {
    values: BTreeMap<Key, (String, Source)>,
    sources: BTreeMap<Key, Source>,
}

impl Picked {
    fn merge(flags: &Layer, env: &Layer, file: &Layer) -> Self {
        let values: BTreeMap<Key, (String, Source)> = Key::ALL
            .into_iter()
            .filter_map(|key| {
                [(flags, Source::Flag), (env, Source::Env), (file, Source::File)]
                    .into_iter()
                    .find_map(|(layer, src)| layer.get(&key).map(|v| (key, (v.clone(), src))))
            })
            .collect();
        let sources = values.iter().map(|(k, (_, s))| (*k, *s)).collect();
        Self { values, sources }
    }

    /// The value as given, unparsed.
    fn raw(&self, key: Key) -> Option<String> {
        self.values.get(&key).map(|(v, _)| v.clone())
    }

    /// The value parsed; a parse error names the key and where the value came from.
    fn parsed<T>(&self, key: Key, parse: impl FnOnce(&str) -> Result<T, String>) -> Result<Option<T>, ConfigError> {
        self.values
            .get(&key)
            .map(|(s, from)| {
                parse(s).map_err(|message| ConfigError::Invalid {
                    key,
                    from: *from,
                    message,
                })
            })
            .transpose()
    }
}

/// `K8S_VERSION` and the image family, which must cover it (by default: the family that does).
fn resolve_version(picked: &Picked) -> Result<(KubeVersion, Family), ConfigError> {
    let k8s_version = picked
        .parsed(Key::K8sVersion, |s| s.parse::<KubeVersion>())?
        .unwrap_or(DEFAULT_K8S_VERSION);
    let family = match picked.parsed(Key::Family, |s| s.parse::<Family>())? {
        Some(f) if !f.covers(&k8s_version) => {
            let (lo, hi) = f.minors();
            return Err(ConfigError::FamilyMismatch {
                family: f,
                version: k8s_version.to_string(),
                lo,
                hi,
            });
        }
        Some(f) => f,
        None => Family::for_version(&k8s_version).ok_or_else(|| ConfigError::UnsupportedVersion {
            version: k8s_version.to_string(),
            supported: super::version::supported_versions(),
        })?,
    };
    Ok((k8s_version, family))
}

/// `ARCH`, by default this machine's.
fn resolve_arch(picked: &mut Picked, host: &dyn HostFacts) -> Result<String, ConfigError> {
    let given = picked.parsed(Key::Arch, |a| {
        arch_from_machine(a)
            .ok_or_else(|| format!("{a:?} is not a supported architecture: use amd64, arm64, arm or ppc64le"))
    })?;
    if let Some(arch) = given {
        return Ok(arch.to_string());
    }
    let m = host.machine();
    picked.sources.insert(Key::Arch, Source::Detected);
    arch_from_machine(&m)
        .map(str::to_string)
        .ok_or_else(|| ConfigError::Invalid {
            key: Key::Arch,
            from: Source::Detected,
            message: format!("this machine ({m}) has no Kubernetes images; set ARCH explicitly"),
        })
}

/// flannel's settings: the pod network.
struct Network {
    version: String,
    cidr: Ipv4Cidr,
    backend: FlannelBackend,
    ipmasq: bool,
}

fn resolve_network(picked: &Picked) -> Result<Network, ConfigError> {
    Ok(Network {
        version: picked
            .raw(Key::FlannelVersion)
            .unwrap_or_else(|| DEFAULT_FLANNEL_VERSION.to_string()),
        cidr: picked
            .parsed(Key::FlannelNetwork, |s| s.parse::<Ipv4Cidr>())?
            .unwrap_or(Ipv4Cidr {
                addr: Ipv4Addr::new(10, 1, 0, 0),
                prefix: 16,
            }),
        backend: picked
            .parsed(Key::FlannelBackend, |s| s.parse::<FlannelBackend>())?
            .unwrap_or(FlannelBackend::Udp),
        ipmasq: picked.parsed(Key::FlannelIpmasq, parse_bool)?.unwrap_or(true),
    })
}

/// How kboot runs the containers and the kubelet.
struct Runtime {
    restart: RestartPolicy,
    use_cni: bool,
    use_containerized: bool,
    timeout_for_services: Duration,
    cgroup_driver: Driver,
    cgroup_unified: bool,
}

fn resolve_runtime(
    picked: &mut Picked,
    k8s_version: &KubeVersion,
    family: Family,
    host: &dyn HostFacts,
) -> Result<Runtime, ConfigError> {
    let restart = picked
        .parsed(Key::RestartPolicy, |s| s.parse::<RestartPolicy>())?
        .unwrap_or(RestartPolicy::UnlessStopped);
    let use_cni = picked.parsed(Key::UseCni, parse_bool)?.unwrap_or(false);
    let use_containerized = picked.parsed(Key::UseContainerized, parse_bool)?.unwrap_or(false);
    if use_containerized && (family != Family::Hyperkube || k8s_version.at_least(1, 16)) {
        return Err(ConfigError::ContainerizedUnsupported {
            version: k8s_version.to_string(),
        });
    }
    let timeout_for_services = picked
        .parsed(Key::TimeoutForServices, |s| {
            s.parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .map(Duration::from_secs)
                .ok_or_else(|| format!("{s:?} is not a positive number of seconds"))
        })?
        .unwrap_or(Duration::from_secs(20));
    let cgroups = host.cgroups();
    let cgroup_driver = match picked.parsed(Key::CgroupDriver, |s| s.parse::<Driver>().map_err(|e| e.to_string()))? {
        Some(d) => d,
        None => {
            picked.sources.insert(Key::CgroupDriver, Source::Detected);
            Driver::detect(cgroups)
        }
    };
    Ok(Runtime {
        restart,
        use_cni,
        use_containerized,
        timeout_for_services,
        cgroup_driver,
        cgroup_unified: cgroups.unified,
    })
}

/// A node's address: one other hosts can reach it on.
fn parse_node_ip(s: &str) -> Result<Ipv4Addr, String> {
    let ip: Ipv4Addr = s.parse().map_err(|_| format!("{s:?} is not an IPv4 address"))?;
    if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || ip.is_broadcast() {
        return Err(format!(
            "{ip} cannot identify a node: use an address other hosts reach this node on"
        ));
    }
    Ok(ip)
}

/// `IP_ADDRESS` (by default the default-route interface's) and `MASTER_IP` (a master's
/// own address by default; a worker must be told).
fn resolve_addresses(
    picked: &mut Picked,
    role: Role,
    host: &dyn HostFacts,
) -> Result<(Ipv4Addr, Ipv4Addr), ConfigError> {
    let ip_address = match picked.parsed(Key::IpAddress, parse_node_ip)? {
        Some(ip) => ip,
        None => {
            picked.sources.insert(Key::IpAddress, Source::Detected);
            host.default_ipv4()?
        }
    };
    let master_ip = match (picked.parsed(Key::MasterIp, parse_node_ip)?, role) {
        (Some(ip), _) => ip,
        (None, Role::Master) => {
            picked.sources.insert(Key::MasterIp, Source::Default);
            ip_address
        }
        (None, Role::Worker) => return Err(ConfigError::MissingMaster),
    };
    Ok((ip_address, master_ip))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A host with fixed facts.
    pub(crate) struct FakeHost {
        pub default: Ipv4Addr,
        pub addresses: Vec<Ipv4Addr>,
        pub cgroups: HostCgroups,
    }

    impl HostFacts for FakeHost {
        fn default_ipv4(&self) -> Result<Ipv4Addr, netdetect::DetectError> {
            Ok(self.default)
        }
        fn has_address(&self, ip: Ipv4Addr) -> Result<bool, netdetect::DetectError> {
            Ok(self.addresses.contains(&ip))
        }
        fn machine(&self) -> String {
            "x86_64".into()
        }
        fn cgroups(&self) -> HostCgroups {
            self.cgroups
        }
    }

    pub(crate) fn host() -> FakeHost {
        FakeHost {
            default: Ipv4Addr::new(192, 0, 2, 10),
            addresses: vec![Ipv4Addr::new(192, 0, 2, 10), Ipv4Addr::new(198, 51, 100, 7)],
            // This build machine: hybrid cgroup v1, no systemd.
            cgroups: HostCgroups {
                systemd: false,
                unified: false,
            },
        }
    }

    pub(crate) fn layer(pairs: &[(Key, &str)]) -> Layer {
        pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
    }

    /// `resolve` with only flags set, on the fake [`host`].
    pub(crate) fn resolve_flags(role: Role, flags: &Layer) -> Result<NodeConfig, ConfigError> {
        resolve(role, flags, &Layer::new(), &Layer::new(), &host())
    }

    /// A valid configuration from these flags (the rest defaults).
    pub(crate) fn config(role: Role, pairs: &[(Key, &str)]) -> NodeConfig {
        resolve_flags(role, &layer(pairs)).unwrap()
    }

    #[test]
    fn resolve_defaults_pin_the_version_and_detect_the_address() {
        let c = resolve_flags(Role::Master, &Layer::new()).unwrap();
        assert_eq!(c.k8s_version, DEFAULT_K8S_VERSION);
        assert_eq!(c.family, Family::Modern);
        assert_eq!(c.ip_address, Ipv4Addr::new(192, 0, 2, 10));
        assert_eq!(
            c.master_ip, c.ip_address,
            "a master advertises its own address by default"
        );
        assert_eq!(c.sources[&Key::IpAddress], Source::Detected);
        assert_eq!(c.restart, RestartPolicy::UnlessStopped);
        assert_eq!(c.arch, "amd64");
        assert_eq!(c.flannel_network.to_string(), "10.1.0.0/16");
    }

    #[test]
    fn the_cgroup_driver_is_detected_overridable_and_checked_against_the_host() {
        let systemd_v2 = FakeHost {
            cgroups: HostCgroups {
                systemd: true,
                unified: true,
            },
            ..host()
        };
        let none = Layer::new();
        let c = resolve(Role::Master, &none, &none, &none, &systemd_v2).unwrap();
        assert_eq!(
            (c.cgroup_driver, c.sources[&Key::CgroupDriver]),
            (Driver::Systemd, Source::Detected)
        );
        verify_cgroup_driver(&c, &systemd_v2).unwrap();
        let flags = layer(&[(Key::CgroupDriver, "cgroupfs")]);
        let c = resolve(Role::Master, &flags, &none, &none, &systemd_v2).unwrap();
        assert_eq!(
            (c.cgroup_driver, c.sources[&Key::CgroupDriver]),
            (Driver::Cgroupfs, Source::Flag)
        );
        let c = resolve(Role::Master, &none, &none, &none, &host()).unwrap();
        assert_eq!(
            (c.cgroup_driver, c.sources[&Key::CgroupDriver]),
            (Driver::Cgroupfs, Source::Detected),
            "no systemd on the host"
        );
        verify_cgroup_driver(&c, &host()).unwrap();

        let file = layer(&[(Key::CgroupDriver, "cgroupfs")]);
        let c = resolve(Role::Master, &none, &none, &file, &systemd_v2).unwrap();
        assert_eq!(
            (c.cgroup_driver, c.sources[&Key::CgroupDriver]),
            (Driver::Cgroupfs, Source::File)
        );

        let flags = layer(&[(Key::CgroupDriver, "systemd")]);
        let c = resolve(Role::Master, &flags, &none, &none, &host()).unwrap();
        let e = verify_cgroup_driver(&c, &host()).unwrap_err().to_string();
        assert!(
            e.contains("--cgroup-driver") && e.contains("/run/systemd/system"),
            "{e}"
        );

        let e = resolve(
            Role::Master,
            &layer(&[(Key::CgroupDriver, "docker")]),
            &none,
            &none,
            &host(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("cgroupfs or systemd"), "{e}");
    }

    #[test]
    fn resolve_flag_beats_env_beats_file() {
        let file = layer(&[
            (Key::FlannelBackend, "vxlan"),
            (Key::EtcdVersion, "3.5.0-0"),
            (Key::UseCni, "true"),
        ]);
        let env = layer(&[(Key::FlannelBackend, "host-gw"), (Key::EtcdVersion, "3.5.1-0")]);
        let flags = layer(&[(Key::FlannelBackend, "wireguard")]);
        let c = resolve(Role::Master, &flags, &env, &file, &host()).unwrap();
        assert_eq!(c.flannel_backend, FlannelBackend::Wireguard);
        assert_eq!(c.sources[&Key::FlannelBackend], Source::Flag);
        assert_eq!(c.etcd_version, "3.5.1-0");
        assert_eq!(c.sources[&Key::EtcdVersion], Source::Env);
        assert!(c.use_cni);
        assert_eq!(c.sources[&Key::UseCni], Source::File);
        assert_eq!(c.sources[&Key::FlannelVersion], Source::Default);
    }

    #[test]
    fn resolve_unknown_version_lists_the_supported_ones() {
        let env = layer(&[(Key::K8sVersion, "v1.25.3")]);
        let err = resolve(Role::Master, &Layer::new(), &env, &Layer::new(), &host()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("v1.25.3") && msg.contains("modern: v1.34.x") && msg.contains("hyperkube: v1.2.x"),
            "{msg}"
        );
    }

    #[test]
    fn resolve_family_that_does_not_cover_the_version_is_refused() {
        let flags = layer(&[(Key::K8sVersion, "v1.34.4"), (Key::Family, "hyperkube")]);
        let err = resolve_flags(Role::Master, &flags).unwrap_err();
        assert!(matches!(err, ConfigError::FamilyMismatch { .. }), "{err}");
        let flags = layer(&[(Key::K8sVersion, "v1.3.6")]);
        let c = resolve_flags(Role::Master, &flags).unwrap();
        assert_eq!(c.family, Family::Hyperkube, "old versions pick hyperkube by themselves");
        assert_eq!(c.etcd_version, "3.0.4");
    }

    #[test]
    fn resolve_ip_address_not_on_this_host_is_a_clear_error() {
        let flags = layer(&[(Key::IpAddress, "203.0.113.9")]);
        let c = resolve_flags(Role::Master, &flags).unwrap();
        let err = verify_ip_address(&c, &host()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("IP_ADDRESS") && msg.contains("203.0.113.9") && msg.contains("not assigned"),
            "{msg}"
        );
        let flags = layer(&[(Key::IpAddress, "127.0.0.1")]);
        assert!(resolve_flags(Role::Master, &flags).is_err());
        let flags = layer(&[(Key::IpAddress, "198.51.100.7")]);
        let c = resolve_flags(Role::Master, &flags).unwrap();
        assert_eq!(c.ip_address, Ipv4Addr::new(198, 51, 100, 7));
        verify_ip_address(&c, &host()).unwrap();
    }

    #[test]
    fn resolve_worker_without_master_is_refused_and_master_can_advertise_another_address() {
        let err = resolve_flags(Role::Worker, &Layer::new()).unwrap_err();
        assert!(matches!(err, ConfigError::MissingMaster));
        let flags = layer(&[(Key::MasterIp, "203.0.113.1")]);
        let c = resolve_flags(Role::Master, &flags).unwrap();
        assert_eq!(c.master_ip, Ipv4Addr::new(203, 0, 113, 1));
    }

    #[test]
    fn resolve_rejects_bad_values_naming_the_variable() {
        for (key, bad) in [
            (Key::RestartPolicy, "sometimes"),
            (Key::FlannelNetwork, "10.1.0.1/16"),
            (Key::UseCni, "maybe"),
            (Key::TimeoutForServices, "0"),
            (Key::Arch, "s390x"),
            (Key::UseContainerized, "true"),
        ] {
            let flags = layer(&[(key, bad)]);
            let err = resolve_flags(Role::Master, &flags).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.contains(key.env()) || matches!(err, ConfigError::ContainerizedUnsupported { .. }),
                "{key:?}: {msg}"
            );
        }
    }

    #[test]
    fn file_layer_reads_lower_case_keys_and_refuses_typos() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        assert!(
            file_layer(&path).unwrap().is_empty(),
            "a missing file is no configuration"
        );
        std::fs::write(
            &path,
            "k8s_version = \"v1.35.4\"\nuse_cni = true\ntimeout_for_services = 60\n",
        )
        .unwrap();
        let l = file_layer(&path).unwrap();
        assert_eq!(l[&Key::K8sVersion], "v1.35.4");
        assert_eq!(l[&Key::UseCni], "true");
        assert_eq!(l[&Key::TimeoutForServices], "60");
        std::fs::write(&path, "k8s_verison = \"v1.35.4\"\n").unwrap();
        let err = file_layer(&path).unwrap_err().to_string();
        assert!(err.contains("k8s_verison") && err.contains("k8s_version"), "{err}");
    }

    #[test]
    fn env_layer_reads_kube_deploy_names_and_ignores_empty_values() {
        let l = env_layer(|name| match name {
            "K8S_VERSION" => Some("v1.36.3".into()),
            "MASTER_IP" => Some(String::new()),
            _ => None,
        });
        assert_eq!(l.len(), 1);
        assert_eq!(l[&Key::K8sVersion], "v1.36.3");
    }

    #[test]
    fn restart_policy_round_trips() {
        for s in ["no", "always", "unless-stopped", "on-failure", "on-failure:3"] {
            assert_eq!(s.parse::<RestartPolicy>().unwrap().to_string(), s);
        }
    }
}
