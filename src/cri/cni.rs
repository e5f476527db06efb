//! Pod networking through CNI plugins (spec 1.0 and older): the first configuration in
//! the configuration directory, ADD / CHECK / DEL of every plugin of its list in order
//! (DEL in reverse), the loopback plugin on `lo` first, as containerd does.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

type Result<T, E = CniError> = std::result::Result<T, E>;

/// What goes wrong with pod networking: the configuration (the node's, not the
/// request's) or a plugin run. `CriError::code` maps these to gRPC codes.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("CNI configuration {}: no network configuration (*.conflist, *.conf, *.json) found", dir.display())]
    NoConfig { dir: PathBuf },
    #[error("CNI configuration {}: list the directory", dir.display())]
    ListConfigDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("CNI configuration {}: read", path.display())]
    ReadConfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("CNI configuration {}: uses {{{{.PodCIDR}}}} but no pod CIDR is set yet (UpdateRuntimeConfig)", path.display())]
    NoPodCidr { path: PathBuf },
    #[error("CNI configuration {}: parse JSON", path.display())]
    ParseConfig {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("CNI configuration {}: {problem}", path.display())]
    BadConfig { path: PathBuf, problem: &'static str },
    #[error("CNI configuration {}: plugin {plugin:?} not found in {dirs:?}", path.display())]
    PluginMissing {
        path: PathBuf,
        plugin: String,
        dirs: Vec<PathBuf>,
    },
    #[error("CNI {command} with plugin {plugin}: not found in {dirs:?}")]
    PluginNotFound {
        command: &'static str,
        plugin: String,
        dirs: Vec<PathBuf>,
    },
    #[error("CNI {command} with plugin {plugin}: {step}")]
    Run {
        command: &'static str,
        plugin: String,
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("CNI {command} with plugin {plugin}: {step}")]
    Json {
        command: &'static str,
        plugin: String,
        step: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// The plugin ran and failed; `message` is its own report (CNI's error JSON, or its output).
    #[error("CNI {command} with plugin {plugin}: {message} ({status})")]
    Failed {
        command: &'static str,
        plugin: String,
        message: String,
        status: std::process::ExitStatus,
    },
}

/// Where CNI configurations and plugins live.
#[derive(Debug, Clone)]
pub struct CniDirs {
    /// `/etc/cni/net.d` by default.
    pub conf_dir: PathBuf,
    /// `/opt/cni/bin` then `/usr/lib/cni` (Debian's containernetworking-plugins) by default.
    pub bin_dirs: Vec<PathBuf>,
}

impl Default for CniDirs {
    fn default() -> Self {
        Self {
            conf_dir: crate::state::CNI_CONF_DIR.into(),
            bin_dirs: crate::state::CNI_BIN_DIRS.iter().map(PathBuf::from).collect(),
        }
    }
}

/// One network: a `.conflist`, or a single-plugin `.conf`/`.json` treated as a list of one.
#[derive(Debug, Clone)]
pub(crate) struct Network {
    pub name: String,
    pub cni_version: String,
    pub plugins: Vec<Value>,
}

/// Who the namespace belongs to, passed to plugins in `CNI_ARGS`.
#[derive(Debug, Clone)]
pub(crate) struct Attachment<'a> {
    pub sandbox_id: &'a str,
    pub netns: &'a Path,
    pub pod_name: &'a str,
    pub pod_namespace: &'a str,
    pub pod_uid: &'a str,
    /// The pod's port mappings in CNI's `runtimeConfig.portMappings` shape, given to
    /// plugins that declare the `portMappings` capability (the portmap plugin).
    pub port_mappings: Vec<Value>,
}

impl CniDirs {
    /// The network to use, or why there is none (the `NetworkReady` reason). `{{.PodCIDR}}`
    /// in the file is replaced by the CIDR from `UpdateRuntimeConfig`, as containerd's
    /// configuration template does.
    pub(crate) fn network(&self, pod_cidr: &str) -> Result<Network> {
        let dir = &self.conf_dir;
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(CniError::NoConfig { dir: dir.clone() }),
            Err(source) => {
                return Err(CniError::ListConfigDir {
                    dir: dir.clone(),
                    source,
                })
            }
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("conflist" | "conf" | "json")
                )
            })
            .collect();
        files.sort();
        let path = files
            .into_iter()
            .next()
            .ok_or_else(|| CniError::NoConfig { dir: dir.clone() })?;
        let bad = |problem| CniError::BadConfig {
            path: path.clone(),
            problem,
        };
        let text = std::fs::read_to_string(&path).map_err(|source| CniError::ReadConfig {
            path: path.clone(),
            source,
        })?;
        if text.contains("{{.PodCIDR}}") && pod_cidr.is_empty() {
            return Err(CniError::NoPodCidr { path });
        }
        let text = text.replace("{{.PodCIDR}}", pod_cidr);
        let conf: Value = serde_json::from_str(&text).map_err(|source| CniError::ParseConfig {
            path: path.clone(),
            source,
        })?;
        let name = conf["name"].as_str().ok_or_else(|| bad("no \"name\""))?.to_owned();
        let cni_version = conf["cniVersion"].as_str().unwrap_or("0.4.0").to_owned();
        let plugins = match conf.get("plugins") {
            Some(Value::Array(list)) if !list.is_empty() => list.clone(),
            Some(_) => return Err(bad("\"plugins\" must be a non-empty list")),
            None => vec![conf.clone()],
        };
        for p in &plugins {
            let kind = p["type"].as_str().ok_or_else(|| bad("a plugin without \"type\""))?;
            self.plugin(kind).ok_or_else(|| CniError::PluginMissing {
                path: path.clone(),
                plugin: kind.to_owned(),
                dirs: self.bin_dirs.clone(),
            })?;
        }
        Ok(Network {
            name,
            cni_version,
            plugins,
        })
    }

    fn plugin(&self, kind: &str) -> Option<PathBuf> {
        if kind.contains('/') {
            return None;
        }
        self.bin_dirs.iter().map(|d| d.join(kind)).find(|p| p.is_file())
    }

    /// Attaches the namespace: loopback, then every plugin; returns the final result.
    pub(crate) async fn add(&self, net: &Network, at: &Attachment<'_>) -> Result<Value> {
        if self.plugin("loopback").is_some() {
            let lo = json!({"cniVersion": net.cni_version, "name": "cni-loopback", "type": "loopback"});
            self.exec("ADD", &lo, at, "lo").await?;
        }
        let mut prev: Option<Value> = None;
        for plugin in &net.plugins {
            let conf = plugin_conf(net, plugin, prev.as_ref(), at);
            prev = Some(self.exec("ADD", &conf, at, "eth0").await?);
        }
        Ok(prev.unwrap_or(Value::Null))
    }

    /// Checks an attachment (CNI >= 0.4.0 only; older networks have no CHECK).
    pub(crate) async fn check(&self, net: &Network, at: &Attachment<'_>, result: &Value) -> Result<()> {
        if net.cni_version.starts_with("0.1")
            || net.cni_version.starts_with("0.2")
            || net.cni_version.starts_with("0.3")
        {
            return Ok(());
        }
        for plugin in &net.plugins {
            self.exec("CHECK", &plugin_conf(net, plugin, Some(result), at), at, "eth0")
                .await?;
        }
        Ok(())
    }

    /// Detaches the namespace, plugins in reverse order. Plugins treat a missing
    /// attachment as success, so DEL is idempotent.
    pub(crate) async fn del(&self, net: &Network, at: &Attachment<'_>, result: Option<&Value>) -> Result<()> {
        for plugin in net.plugins.iter().rev() {
            self.exec("DEL", &plugin_conf(net, plugin, result, at), at, "eth0")
                .await?;
        }
        Ok(())
    }

    async fn exec(&self, command: &'static str, conf: &Value, at: &Attachment<'_>, ifname: &str) -> Result<Value> {
        let kind = conf["type"].as_str().unwrap_or_default().to_owned();
        let plugin = || kind.clone();
        let run = |step| {
            move |source| CniError::Run {
                command,
                plugin: plugin(),
                step,
                source,
            }
        };
        let json = |step| {
            move |source| CniError::Json {
                command,
                plugin: plugin(),
                step,
                source,
            }
        };
        let bin = self.plugin(&kind).ok_or_else(|| CniError::PluginNotFound {
            command,
            plugin: plugin(),
            dirs: self.bin_dirs.clone(),
        })?;
        // Plugin directories come from the configuration as paths: none holds a `:`.
        let path = std::env::join_paths(&self.bin_dirs).unwrap_or_default();
        let args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
            at.pod_namespace, at.pod_name, at.sandbox_id, at.pod_uid
        );
        let mut child = Command::new(&bin)
            .env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", at.sandbox_id)
            .env("CNI_NETNS", at.netns)
            .env("CNI_IFNAME", ifname)
            .env("CNI_PATH", path)
            .env("CNI_ARGS", args)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(run("run the plugin"))?;
        let input = serde_json::to_vec(conf).map_err(json("encode the configuration"))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(&input).await.map_err(run("write the configuration"))?;
        }
        let out = child.wait_with_output().await.map_err(run("wait for the plugin"))?;
        tracing::debug!(command, plugin = %kind, ifname, status = %out.status, "CNI plugin ran");
        if !out.status.success() {
            // Plugins report errors as JSON on stdout: {"code", "msg", "details"}.
            let err: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            let msg = match (err["msg"].as_str(), err["details"].as_str()) {
                (Some(m), Some(d)) if !d.is_empty() => format!("{m}: {d}"),
                (Some(m), _) => m.to_owned(),
                _ => String::from_utf8_lossy(if out.stdout.is_empty() {
                    &out.stderr
                } else {
                    &out.stdout
                })
                .trim()
                .to_owned(),
            };
            return Err(CniError::Failed {
                command,
                plugin: plugin(),
                message: msg,
                status: out.status,
            });
        }
        if out.stdout.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&out.stdout).map_err(json("parse the result"))
    }
}

/// A plugin's stdin: its own configuration plus the network's name and version and the
/// previous result.
fn plugin_conf(net: &Network, plugin: &Value, prev: Option<&Value>, at: &Attachment<'_>) -> Value {
    let mut conf = plugin.clone();
    conf["name"] = json!(net.name);
    conf["cniVersion"] = json!(net.cni_version);
    if plugin["capabilities"]["portMappings"] == json!(true) && !at.port_mappings.is_empty() {
        conf["runtimeConfig"]["portMappings"] = json!(at.port_mappings);
    }
    if let Some(prev) = prev.filter(|p| !p.is_null()) {
        conf["prevResult"] = prev.clone();
    }
    conf
}

/// The pod's addresses from a CNI result, first one first, without prefix lengths.
pub(crate) fn result_ips(result: &Value) -> Vec<String> {
    let mut ips: Vec<String> = result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ip| ip["address"].as_str())
        .map(|a| a.split('/').next().unwrap_or(a).to_owned())
        .collect();
    // CNI 0.2.0 results.
    for key in ["ip4", "ip6"] {
        if let Some(a) = result[key]["ip"].as_str() {
            ips.push(a.split('/').next().unwrap_or(a).to_owned());
        }
    }
    ips
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs(conf: &str, name: &str, plugins: &[&str]) -> (tempfile::TempDir, CniDirs) {
        let tmp = tempfile::tempdir().unwrap();
        let (c, b) = (tmp.path().join("net.d"), tmp.path().join("bin"));
        std::fs::create_dir_all(&c).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(c.join(name), conf).unwrap();
        for p in plugins {
            std::fs::write(b.join(p), "").unwrap();
        }
        (
            tmp,
            CniDirs {
                conf_dir: c,
                bin_dirs: vec![b],
            },
        )
    }

    #[test]
    fn network_single_conf_becomes_a_list_and_pod_cidr_is_substituted() {
        let conf = r#"{"cniVersion":"1.0.0","name":"pods","type":"bridge","ipam":{"type":"host-local","subnet":"{{.PodCIDR}}"}}"#;
        let (_t, d) = dirs(conf, "10-pods.conf", &["bridge"]);
        let net = d.network("10.88.0.0/16").unwrap();
        assert_eq!(net.name, "pods");
        assert_eq!(net.plugins.len(), 1);
        assert_eq!(net.plugins[0]["ipam"]["subnet"], "10.88.0.0/16");
    }

    #[test]
    fn network_pod_cidr_template_without_cidr_is_not_ready() {
        let conf = r#"{"cniVersion":"1.0.0","name":"pods","type":"bridge","ipam":{"subnet":"{{.PodCIDR}}"}}"#;
        let (_t, d) = dirs(conf, "10-pods.conf", &["bridge"]);
        let err = d.network("").unwrap_err().to_string();
        assert!(err.contains("UpdateRuntimeConfig"), "{err}");
    }

    #[test]
    fn network_missing_plugin_names_it() {
        let conf = r#"{"cniVersion":"1.0.0","name":"pods","plugins":[{"type":"bridge"},{"type":"portmap"}]}"#;
        let (_t, d) = dirs(conf, "10-pods.conflist", &["bridge"]);
        let err = d.network("").unwrap_err().to_string();
        assert!(err.contains("portmap"), "{err}");
    }

    #[test]
    fn network_empty_dir_is_not_ready() {
        let tmp = tempfile::tempdir().unwrap();
        let d = CniDirs {
            conf_dir: tmp.path().into(),
            bin_dirs: vec![],
        };
        assert!(d.network("").is_err());
    }

    #[test]
    fn result_ips_strip_prefix_and_keep_order() {
        let r = json!({"ips":[{"address":"10.1.0.5/24"},{"address":"fd00::5/64"}]});
        assert_eq!(result_ips(&r), vec!["10.1.0.5", "fd00::5"]);
    }
}
