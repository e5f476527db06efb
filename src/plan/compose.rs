//! The Compose-file subset `kboot run -f` reads, parsed into a [`Plan`].
//!
//! Every key is typed and unknown keys are refused (`deny_unknown_fields`), so a
//! key kboot does not support is an error naming the service, the key and the
//! line, never silently ignored. Values are checked while parsing (bad volume
//! specs, restart policies, sizes) so their errors carry the line too; checks
//! that span services (`depends_on`) run afterwards and locate the line by key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use super::model::{Device, Healthcheck, Plan, Propagation, RestartPolicy, Service, Volume};

/// A plan file kboot cannot use. Every message names the file and, when known,
/// the service, the key and the line.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("read plan file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Syntax, unknown keys and bad values, as reported while parsing (with `services.NAME.KEY` and the line).
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    /// A problem found after parsing (dependencies, names).
    #[error("{}: service `{service}`, key `{key}`{}: {message}", path.display(), line.map(|l| format!(" (line {l})")).unwrap_or_default())]
    Invalid {
        path: PathBuf,
        service: String,
        key: String,
        line: Option<usize>,
        message: String,
    },
    #[error("{}: no services: a plan needs a `services:` map with at least one service", path.display())]
    Empty { path: PathBuf },
}

/// Reads and validates a Compose-subset file.
pub fn load(path: &Path) -> Result<Plan, ComposeError> {
    let text = std::fs::read_to_string(path).map_err(|source| ComposeError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, path)
}

/// Parses Compose text; `path` only names the file in errors.
pub fn parse(text: &str, path: &Path) -> Result<Plan, ComposeError> {
    let file: ComposeFile = serde_norway::from_str(text).map_err(|e| ComposeError::Parse {
        path: path.to_owned(),
        message: describe(text, &e),
    })?;
    let invalid = |service: &str, key: &str, message: String| ComposeError::Invalid {
        path: path.to_owned(),
        service: service.to_owned(),
        key: key.to_owned(),
        line: locate(text, service, key),
        message,
    };
    let mut services = Vec::new();
    for (name, raw) in &file.services {
        if !valid_name(name) {
            return Err(invalid(
                name,
                "name",
                "a service name is a path component: use letters, digits, `_`, `.`, `-` (not `.` or `..`)".into(),
            ));
        }
        for dep in &raw.depends_on.0 {
            if !file.services.contains_key(dep) {
                return Err(invalid(name, "depends_on", format!("unknown service `{dep}`")));
            }
            if dep == name {
                return Err(invalid(name, "depends_on", "a service cannot depend on itself".into()));
            }
        }
        services.push(raw.to_service(name));
    }
    if services.is_empty() {
        return Err(ComposeError::Empty { path: path.to_owned() });
    }
    let ordered = start_order(&services).map_err(|cycle| {
        invalid(
            &cycle,
            "depends_on",
            "dependency cycle: services depend on each other".into(),
        )
    })?;
    Ok(Plan {
        services: ordered,
        files: Vec::new(),
    })
}

/// Rewrites serde_norway's `services.NAME.KEY: detail at line L column C` as
/// `service `NAME`, key `KEY` (line L): detail`. The line comes from the error's
/// location (`Error::location`), which also says which suffix to drop; the path
/// prefix is only in the text (the crate has no accessor for it). Errors raised
/// while checking a value are placed by serde_norway at the start of the service's
/// map, so the key's own line is looked up when the path stops at the service.
fn describe(text: &str, e: &serde_norway::Error) -> String {
    let msg = e.to_string();
    let location = e.location();
    let serde_line = location.as_ref().map(|l| l.line());
    // The text names the location unless it is the very start (line 1, column 1); a
    // syntax error may name a second one (its context) after it, and is kept whole.
    let stripped = location
        .as_ref()
        .and_then(|l| msg.strip_suffix(&format!(" at line {} column {}", l.line(), l.column())));
    let at_start = location.as_ref().is_some_and(|l| (l.line(), l.column()) == (1, 1));
    let body = stripped.unwrap_or(&msg);
    let Some((svc_path, detail)) = body.strip_prefix("services.").and_then(|r| r.split_once(": ")) else {
        return match serde_line {
            Some(l) if stripped.is_some() || at_start => format!("{body} (line {l})"),
            _ => msg,
        };
    };
    let (name, path_key) = match svc_path.split_once('.') {
        Some((n, k)) => (n, Some(k.split(['[', '.']).next().unwrap_or(k))),
        None => (svc_path, None),
    };
    let key = path_key.map(str::to_owned).or_else(|| {
        detail
            .strip_prefix("unknown field `")
            .and_then(|r| r.split_once('`'))
            .map(|(k, _)| k.to_owned())
            .or_else(|| detail.split_once(':').map(|(k, _)| k.trim().to_owned()))
            .filter(|k| !k.contains(' '))
    });
    match key {
        Some(key) => {
            let line = if path_key.is_some() {
                serde_line
            } else {
                locate(text, name, &key).or(serde_line)
            };
            let line = line.map(|l| format!(" (line {l})")).unwrap_or_default();
            format!("service `{name}`, key `{key}`{line}: {detail}")
        }
        None => {
            let line = serde_line.map(|l| format!(" (line {l})")).unwrap_or_default();
            format!("service `{name}`{line}: {detail}")
        }
    }
}

/// Container names become directories, cgroup and libcontainer IDs.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 128
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// Dependencies first, otherwise file order (Kahn's algorithm). On a cycle,
/// returns the name of a service in it.
fn start_order(services: &[Service]) -> Result<Vec<Service>, String> {
    let mut done: Vec<String> = Vec::new();
    let mut left: Vec<&Service> = services.iter().collect();
    while !left.is_empty() {
        let ready = left
            .iter()
            .position(|s| s.depends_on.iter().all(|d| done.contains(d)))
            .ok_or_else(|| left[0].name.clone())?;
        done.push(left.remove(ready).name.clone());
    }
    Ok(done
        .iter()
        .filter_map(|n| services.iter().find(|s| &s.name == n).cloned())
        .collect())
}

/// The 1-based line of `key:` inside service `service`'s block, found by
/// indentation (serde_norway gives no positions once a value is parsed).
fn locate(text: &str, service: &str, key: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let is_key = |l: &str, k: &str| {
        let t = l.trim_start();
        t.strip_prefix(k)
            .or_else(|| t.strip_prefix(&format!("\"{k}\"")))
            .is_some_and(|rest| rest.trim_start().starts_with(':'))
    };
    let services = lines.iter().position(|l| indent(l) == 0 && is_key(l, "services"))?;
    let (start, svc_indent) = lines
        .iter()
        .enumerate()
        .skip(services + 1)
        .find(|(_, l)| is_key(l, service))
        .map(|(i, l)| (i, indent(l)))?;
    if key == "name" {
        return Some(start + 1);
    }
    lines
        .iter()
        .enumerate()
        .skip(start + 1)
        .take_while(|(_, l)| l.trim().is_empty() || indent(l) > svc_indent)
        .find(|(_, l)| is_key(l, key))
        .map(|(i, _)| i + 1)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ComposeFile {
    /// Accepted and ignored: it carries no meaning for the subset.
    #[serde(default)]
    #[allow(dead_code)]
    version: Option<serde_norway::Value>,
    #[serde(default)]
    services: indexmap_like::OrderedMap<RawService>,
}

/// Compose keeps services in a map; kboot keeps the file's order for ties in start order.
mod indexmap_like {
    use serde::de::{MapAccess, Visitor};
    use serde::{Deserialize, Deserializer};
    use std::fmt;
    use std::marker::PhantomData;

    #[derive(Debug)]
    pub struct OrderedMap<V>(pub Vec<(String, V)>);

    impl<V> Default for OrderedMap<V> {
        fn default() -> Self {
            Self(Vec::new())
        }
    }

    impl<V> OrderedMap<V> {
        pub fn contains_key(&self, k: &str) -> bool {
            self.0.iter().any(|(n, _)| n == k)
        }
    }

    impl<'a, V> IntoIterator for &'a OrderedMap<V> {
        type Item = (&'a String, &'a V);
        type IntoIter = std::iter::Map<std::slice::Iter<'a, (String, V)>, fn(&'a (String, V)) -> (&'a String, &'a V)>;
        fn into_iter(self) -> Self::IntoIter {
            self.0.iter().map(|(k, v)| (k, v))
        }
    }

    impl<'de, V: Deserialize<'de>> Deserialize<'de> for OrderedMap<V> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V2<V>(PhantomData<V>);
            impl<'de, V: Deserialize<'de>> Visitor<'de> for V2<V> {
                type Value = OrderedMap<V>;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a map of services")
                }
                fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                    Ok(OrderedMap(Vec::new()))
                }
                fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                    let mut out: Vec<(String, V)> = Vec::new();
                    while let Some((k, v)) = m.next_entry::<String, V>()? {
                        if out.iter().any(|(n, _)| *n == k) {
                            return Err(serde::de::Error::custom(format!(
                                "service `{k}` is defined twice (names must be unique)"
                            )));
                        }
                        out.push((k, v));
                    }
                    Ok(OrderedMap(out))
                }
            }
            d.deserialize_map(V2(PhantomData))
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    image: String,
    #[serde(default)]
    entrypoint: Option<Argv>,
    #[serde(default)]
    command: Option<Argv>,
    #[serde(default)]
    environment: Environment,
    #[serde(default)]
    volumes: Vec<VolumeSpec>,
    #[serde(default)]
    network_mode: Option<NetworkMode>,
    #[serde(default)]
    pid: Option<PidMode>,
    #[serde(default)]
    privileged: bool,
    #[serde(default)]
    cap_add: Vec<CapName>,
    #[serde(default)]
    devices: Vec<DeviceSpec>,
    #[serde(default)]
    restart: Option<RestartSpec>,
    #[serde(default)]
    depends_on: DependsOn,
    #[serde(default)]
    healthcheck: Option<RawHealthcheck>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    mem_limit: Option<ByteSize>,
    #[serde(default)]
    cpus: Option<Cpus>,
}

impl RawService {
    fn to_service(&self, name: &str) -> Service {
        Service {
            name: name.to_owned(),
            image: self.image.clone(),
            entrypoint: self.entrypoint.as_ref().map(|a| a.0.clone()),
            command: self.command.as_ref().map(|a| a.0.clone()),
            environment: self.environment.0.clone(),
            volumes: self.volumes.iter().map(|v| v.0.clone()).collect(),
            network_host: self.network_mode == Some(NetworkMode::Host),
            pid_host: self.pid.is_some(),
            privileged: self.privileged,
            cap_add: self.cap_add.iter().map(|c| c.0.clone()).collect(),
            devices: self.devices.iter().map(|d| d.0.clone()).collect(),
            restart: self.restart.map(|r| r.0).unwrap_or_default(),
            depends_on: self.depends_on.0.clone(),
            healthcheck: self.healthcheck.as_ref().map(|h| h.0.clone()),
            user: self.user.clone(),
            working_dir: self.working_dir.clone(),
            mem_limit: self.mem_limit.map(|b| b.0),
            cpus: self.cpus.map(|c| c.0),
        }
    }
}

/// Implements `Deserialize` for a newtype from a string-or-value parser whose
/// error message becomes a serde error (which serde_norway places at the line).
macro_rules! from_yaml_value {
    ($ty:ident, $parse:expr) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let v = serde_norway::Value::deserialize(d)?;
                #[allow(clippy::redundant_closure_call)]
                ($parse)(&v).map($ty).map_err(de::Error::custom)
            }
        }
    };
}

/// `entrypoint` / `command`: a list, or a string split like a shell would.
#[derive(Debug)]
struct Argv(Vec<String>);
from_yaml_value!(Argv, |v: &serde_norway::Value| -> Result<Vec<String>, String> {
    match v {
        serde_norway::Value::String(s) => split_words(s),
        serde_norway::Value::Sequence(items) => items
            .iter()
            .map(|i| scalar(i).ok_or_else(|| "list items must be strings".to_owned()))
            .collect(),
        _ => Err("expected a string or a list of strings".into()),
    }
});

#[derive(Debug, Default)]
struct Environment(BTreeMap<String, String>);
impl<'de> Deserialize<'de> for Environment {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_norway::Value::deserialize(d)?;
        let mut out = BTreeMap::new();
        match v {
            serde_norway::Value::Mapping(m) => {
                for (k, v) in m {
                    let k = scalar(&k).ok_or_else(|| de::Error::custom("environment names must be strings"))?;
                    let v = if v.is_null() {
                        String::new()
                    } else {
                        scalar(&v)
                            .ok_or_else(|| de::Error::custom(format!("environment: `{k}`: value must be a scalar")))?
                    };
                    out.insert(k, v);
                }
            }
            serde_norway::Value::Sequence(items) => {
                for i in items {
                    let s = scalar(&i).ok_or_else(|| de::Error::custom("environment entries must be `NAME=VALUE`"))?;
                    let (k, v) = s.split_once('=').unwrap_or((s.as_str(), ""));
                    out.insert(k.to_owned(), v.to_owned());
                }
            }
            serde_norway::Value::Null => {}
            _ => return Err(de::Error::custom("environment: expected a map or a list of NAME=VALUE")),
        }
        if let Some(k) = out.keys().find(|k| k.is_empty() || k.contains('=')) {
            return Err(de::Error::custom(format!("environment: bad variable name `{k}`")));
        }
        Ok(Environment(out))
    }
}

#[derive(Debug)]
struct VolumeSpec(Volume);
from_yaml_value!(VolumeSpec, |v: &serde_norway::Value| -> Result<Volume, String> {
    let s = scalar(v).ok_or("volumes: long syntax is not supported; use `SRC:DST[:ro|rw|shared|slave|private]`")?;
    parse_volume(&s)
});

/// `SRC:DST[:opt[,opt]]` with absolute paths (named volumes are not supported).
pub fn parse_volume(s: &str) -> Result<Volume, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let (src, dst, opts) = match parts.as_slice() {
        [src, dst] => (*src, *dst, ""),
        [src, dst, opts] => (*src, *dst, *opts),
        _ => {
            return Err(format!(
                "volumes: `{s}`: expected `SRC:DST[:ro|rw|shared|slave|private]`"
            ))
        }
    };
    for (what, p) in [("source", src), ("destination", dst)] {
        if !p.starts_with('/') {
            return Err(format!(
                "volumes: `{s}`: {what} `{p}` must be an absolute path (named volumes are not supported)"
            ));
        }
        if p.split('/').any(|c| c == "..") {
            return Err(format!("volumes: `{s}`: {what} `{p}` must not contain `..`"));
        }
    }
    let mut vol = Volume {
        source: src.into(),
        target: dst.into(),
        read_only: false,
        propagation: Propagation::Private,
    };
    for opt in opts.split(',').filter(|o| !o.is_empty()) {
        match opt {
            "ro" => vol.read_only = true,
            "rw" => vol.read_only = false,
            "shared" | "rshared" => vol.propagation = Propagation::Shared,
            "slave" | "rslave" => vol.propagation = Propagation::Slave,
            "private" | "rprivate" => vol.propagation = Propagation::Private,
            other => {
                return Err(format!(
                    "volumes: `{s}`: unsupported option `{other}` (use ro, rw, shared, slave, private)"
                ))
            }
        }
    }
    Ok(vol)
}

#[derive(Debug, Deserialize, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum NetworkMode {
    /// The host's network namespace.
    Host,
    /// A new network namespace with only loopback (kboot has no bridge networking).
    None,
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum PidMode {
    Host,
}

#[derive(Debug)]
struct CapName(String);
from_yaml_value!(CapName, |v: &serde_norway::Value| -> Result<String, String> {
    let s = scalar(v).ok_or("cap_add: expected capability names")?;
    let name = s.trim_start_matches("CAP_").to_ascii_uppercase();
    if parse_capability(&name).is_some() {
        Ok(name)
    } else {
        Err(format!("cap_add: unknown capability `{s}`"))
    }
});

#[derive(Debug)]
struct DeviceSpec(Device);
from_yaml_value!(DeviceSpec, |v: &serde_norway::Value| -> Result<Device, String> {
    let s = scalar(v).ok_or("devices: expected `HOST[:CONTAINER[:PERMS]]`")?;
    let parts: Vec<&str> = s.split(':').collect();
    let (host, container, perms) = match parts.as_slice() {
        [h] => (*h, *h, "rwm"),
        [h, c] => (*h, *c, "rwm"),
        [h, c, p] => (*h, *c, *p),
        _ => return Err(format!("devices: `{s}`: expected `HOST[:CONTAINER[:PERMS]]`")),
    };
    if !host.starts_with('/') || !container.starts_with('/') {
        return Err(format!("devices: `{s}`: paths must be absolute"));
    }
    if perms.is_empty() || !perms.chars().all(|c| "rwm".contains(c)) {
        return Err(format!("devices: `{s}`: permissions `{perms}` must be some of r, w, m"));
    }
    Ok(Device {
        host: host.into(),
        container: container.into(),
        permissions: perms.to_owned(),
    })
});

#[derive(Debug, Clone, Copy)]
struct RestartSpec(RestartPolicy);
from_yaml_value!(
    RestartSpec,
    |v: &serde_norway::Value| -> Result<RestartPolicy, String> {
        // YAML 1.1 reads a bare `no` as a boolean.
        if v.as_bool() == Some(false) {
            return Ok(RestartPolicy::No);
        }
        let s = scalar(v).ok_or("restart: expected no, on-failure[:N], always or unless-stopped")?;
        s.parse::<RestartPolicy>().map_err(|e| format!("restart: {e}"))
    }
);

#[derive(Debug, Default)]
struct DependsOn(Vec<String>);
impl<'de> Deserialize<'de> for DependsOn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Long {
            #[serde(default)]
            condition: Option<String>,
        }
        let v = serde_norway::Value::deserialize(d)?;
        match v {
            serde_norway::Value::Sequence(items) => items
                .iter()
                .map(|i| scalar(i).ok_or_else(|| de::Error::custom("depends_on: expected service names")))
                .collect::<Result<_, _>>()
                .map(DependsOn),
            serde_norway::Value::Mapping(m) => {
                let mut out = Vec::new();
                for (k, v) in m {
                    let name = scalar(&k).ok_or_else(|| de::Error::custom("depends_on: expected service names"))?;
                    let long: Long = serde_norway::from_value(v).map_err(de::Error::custom)?;
                    match long.condition.as_deref() {
                        None | Some("service_started") => {}
                        Some(c) => {
                            return Err(de::Error::custom(format!(
                                "depends_on: `{name}`: unsupported condition `{c}` (only service_started)"
                            )))
                        }
                    }
                    out.push(name);
                }
                Ok(DependsOn(out))
            }
            serde_norway::Value::Null => Ok(DependsOn(Vec::new())),
            _ => Err(de::Error::custom("depends_on: expected a list of service names")),
        }
    }
}

#[derive(Debug)]
struct RawHealthcheck(Healthcheck);
impl<'de> Deserialize<'de> for RawHealthcheck {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct H {
            test: serde_norway::Value,
            #[serde(default)]
            interval: Option<String>,
            #[serde(default)]
            timeout: Option<String>,
            #[serde(default)]
            retries: Option<u32>,
            #[serde(default)]
            start_period: Option<String>,
        }
        let h = H::deserialize(d)?;
        let test = match &h.test {
            serde_norway::Value::Sequence(items) => {
                let argv: Vec<String> = items
                    .iter()
                    .map(|i| scalar(i).ok_or_else(|| de::Error::custom("healthcheck.test: expected strings")))
                    .collect::<Result<_, _>>()?;
                match argv.split_first() {
                    Some((first, rest)) if first == "CMD" && !rest.is_empty() => rest.to_vec(),
                    Some((first, rest)) if first == "CMD-SHELL" && rest.len() == 1 => {
                        vec!["/bin/sh".into(), "-c".into(), rest[0].clone()]
                    }
                    _ => {
                        return Err(de::Error::custom(
                            "healthcheck.test: use [\"CMD\", args…] or [\"CMD-SHELL\", \"command\"]",
                        ))
                    }
                }
            }
            serde_norway::Value::String(s) => vec!["/bin/sh".into(), "-c".into(), s.clone()],
            _ => return Err(de::Error::custom("healthcheck.test: expected a list or a string")),
        };
        let dur = |s: &Option<String>, default: u64| -> Result<Duration, D::Error> {
            s.as_deref()
                .map(|s| parse_duration(s).map_err(de::Error::custom))
                .unwrap_or(Ok(Duration::from_secs(default)))
        };
        Ok(RawHealthcheck(Healthcheck {
            test,
            interval: dur(&h.interval, 30)?,
            timeout: dur(&h.timeout, 30)?,
            retries: h.retries.unwrap_or(3),
            start_period: dur(&h.start_period, 0)?,
        }))
    }
}

/// A capability name with or without `CAP_`, in any case (`net_admin`, `CAP_NET_ADMIN`).
pub fn parse_capability(name: &str) -> Option<oci_spec::runtime::Capability> {
    serde_json::from_value(serde_json::Value::String(name.to_owned())).ok()
}

/// Compose durations: `1m30s`, `500ms`, `10s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("bad duration `{s}`: {e}"))
}

#[derive(Debug, Clone, Copy)]
struct ByteSize(u64);
from_yaml_value!(ByteSize, |v: &serde_norway::Value| -> Result<u64, String> {
    if let Some(n) = v.as_u64() {
        return Ok(n);
    }
    let s = scalar(v).ok_or("mem_limit: expected a size such as 256m")?;
    parse_size(&s).map_err(|e| format!("mem_limit: {e}"))
});

/// Docker sizes: a number with an optional b, k, m, g suffix (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t
        .strip_suffix('b')
        .filter(|r| !r.is_empty() && r.ends_with(['k', 'm', 'g']))
        .unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('b') => (&t[..t.len() - 1], 1),
        _ => (t, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("bad size `{s}` (use e.g. 512m, 2g)"))
}

#[derive(Debug, Clone, Copy)]
struct Cpus(f64);
from_yaml_value!(Cpus, |v: &serde_norway::Value| -> Result<f64, String> {
    let n = v
        .as_f64()
        .or_else(|| scalar(v).and_then(|s| s.parse().ok()))
        .ok_or("cpus: expected a number such as 0.5")?;
    if n > 0.0 && n.is_finite() {
        Ok(n)
    } else {
        Err(format!("cpus: must be positive, got {n}"))
    }
});

/// A YAML scalar as the string the user wrote (numbers and booleans included).
fn scalar(v: &serde_norway::Value) -> Option<String> {
    match v {
        serde_norway::Value::String(s) => Some(s.clone()),
        serde_norway::Value::Number(n) => Some(n.to_string()),
        serde_norway::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Splits a command string into words the way `sh` would for quotes and
/// backslashes (no expansion), as Compose does for string commands.
pub fn split_words(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err(format!("unterminated ' in `{s}`")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return Err(format!("unterminated \" in `{s}`")),
                        },
                        Some(c) => cur.push(c),
                        None => return Err(format!("unterminated \" in `{s}`")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    cur.push(c);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> Result<Plan, ComposeError> {
        parse(s, Path::new("plan.yml"))
    }

    #[test]
    fn compose_full_service_maps_every_key() {
        let plan = parse_str(
            r#"
services:
  etcd:
    image: registry.k8s.io/etcd:3.4
    entrypoint: /usr/bin/etcd
    command: ["--name", "n1"]
    environment:
      ETCD_X: "1"
    volumes:
      - /var/lib/etcd:/var/lib/etcd
      - /var/lib/kubelet:/var/lib/kubelet:shared
      - /etc/ssl:/etc/ssl:ro
    network_mode: host
    pid: host
    privileged: true
    cap_add: [NET_ADMIN, CAP_SYS_ADMIN]
    devices: ["/dev/fuse"]
    restart: on-failure:3
    user: "1000:1000"
    working_dir: /var/lib/etcd
    mem_limit: 256m
    cpus: 0.5
    healthcheck:
      test: ["CMD", "etcdctl", "endpoint", "health"]
      interval: 5s
  web:
    image: nginx
    command: sh -c 'echo "hi there"'
    restart: "no"
    depends_on: [etcd]
"#,
        )
        .unwrap();
        assert_eq!(plan.services.len(), 2);
        let e = &plan.services[0];
        assert_eq!(e.entrypoint.as_deref(), Some(&["/usr/bin/etcd".to_owned()][..]));
        assert_eq!(e.command.as_ref().unwrap(), &["--name", "n1"]);
        assert_eq!(e.environment["ETCD_X"], "1");
        assert_eq!(e.volumes[1].propagation, Propagation::Shared);
        assert!(e.volumes[2].read_only);
        assert!(e.network_host && e.pid_host && e.privileged);
        assert_eq!(e.cap_add, ["NET_ADMIN", "SYS_ADMIN"]);
        assert_eq!(e.devices[0].container, Path::new("/dev/fuse"));
        assert_eq!(e.restart, RestartPolicy::OnFailure { max_retries: Some(3) });
        assert_eq!(e.mem_limit, Some(256 << 20));
        assert_eq!(e.cpus, Some(0.5));
        assert_eq!(e.healthcheck.as_ref().unwrap().interval, Duration::from_secs(5));
        let w = &plan.services[1];
        assert_eq!(w.command.as_ref().unwrap(), &["sh", "-c", "echo \"hi there\""]);
        assert_eq!(w.restart, RestartPolicy::No);
        assert!(!w.network_host);
    }

    #[test]
    fn compose_dependencies_start_first_whatever_the_file_order() {
        let plan = parse_str(
            "services:\n  a:\n    image: x\n    depends_on: [b]\n  b:\n    image: x\n    depends_on:\n      c: {condition: service_started}\n  c:\n    image: x\n",
        )
        .unwrap();
        let names: Vec<_> = plan.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["c", "b", "a"]);
    }

    #[test]
    fn compose_unknown_key_names_service_key_and_line() {
        let err = parse_str("services:\n  etcd:\n    image: x\n    ports: [\"80:80\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("service `etcd`, key `ports` (line 4)"), "{err}");
    }

    #[test]
    fn compose_error_outside_services_says_its_line_once() {
        let err = parse_str("services:\n  a:\n    image: x\nnetworks: {}\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown field `networks`") && err.contains("(line 4)"),
            "{err}"
        );
        assert!(!err.contains("at line"), "{err}");
    }

    #[test]
    fn compose_bad_volume_spec_names_service_and_line() {
        let err = parse_str("services:\n  etcd:\n    image: x\n    volumes:\n      - data:/var/lib/etcd\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("service `etcd`, key `volumes` (line 5)"), "{err}");
        assert!(err.contains("must be an absolute path"), "{err}");
        let err = parse_str("services:\n  etcd:\n    image: x\n    volumes: [\"/a:/b:z\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unsupported option `z`"), "{err}");
    }

    #[test]
    fn compose_unsupported_values_are_errors_not_ignored() {
        for (yaml, want) in [
            ("    network_mode: bridge\n", "network_mode"),
            ("    restart: sometimes\n", "restart"),
            ("    mem_limit: lots\n", "bad size"),
            ("    cpus: -1\n", "cpus"),
            ("    cap_add: [FLY]\n", "unknown capability"),
            ("    pid: container\n", "pid"),
        ] {
            let err = parse_str(&format!("services:\n  s:\n    image: x\n{yaml}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{yaml}: {err}");
            let key = yaml.trim().split(':').next().unwrap();
            assert!(
                err.contains(&format!("service `s`, key `{key}` (line 4)")),
                "{yaml}: {err}"
            );
        }
    }

    #[test]
    fn compose_unknown_dependency_and_cycles_name_the_line() {
        let err = parse_str("services:\n  a:\n    image: x\n    depends_on: [zz]\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("service `a`, key `depends_on` (line 4): unknown service `zz`"),
            "{err}"
        );
        let err =
            parse_str("services:\n  a:\n    image: x\n    depends_on: [b]\n  b:\n    image: x\n    depends_on: [a]\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("cycle"), "{err}");
    }

    #[test]
    fn compose_duplicate_service_and_bad_name_are_refused() {
        let err = parse_str("services:\n  a:\n    image: x\n  a:\n    image: y\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("defined twice") || err.contains("duplicate"), "{err}");
        let err = parse_str("services:\n  \"a/b\":\n    image: x\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("service `a/b`, key `name`"), "{err}");
    }

    #[test]
    fn compose_missing_image_and_empty_file_are_errors() {
        let err = parse_str("services:\n  a:\n    command: x\n").unwrap_err().to_string();
        assert!(err.contains("service `a`") && err.contains("image"), "{err}");
        assert!(matches!(parse_str("services: {}\n"), Err(ComposeError::Empty { .. })));
    }

    #[test]
    fn split_words_handles_quotes_like_sh() {
        assert_eq!(
            split_words(r#"a 'b c' "d \"e\"" f\ g"#).unwrap(),
            ["a", "b c", "d \"e\"", "f g"]
        );
        assert!(split_words("'open").is_err());
    }

    #[test]
    fn parse_size_accepts_docker_suffixes() {
        assert_eq!(parse_size("512m").unwrap(), 512 << 20);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("2GB").unwrap(), 2 << 30);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert!(parse_size("0").is_err());
    }
}
