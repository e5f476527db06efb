//! `registries.toml`: rewrite rules, mirrors, credentials, insecure hosts and
//! extra CAs; plus Docker's `config.json` `auths`.
//!
//! ```toml
//! [[rewrite]]                      # first matching prefix wins
//! from = "quay.io/coreos/"
//! to = "registry.local:5000/coreos/"
//!
//! [[registry]]
//! host = "docker.io"
//! mirrors = ["mirror.local:5000"]  # tried in order; a failing mirror falls back to the next
//! fallback = true                  # false: never go to docker.io itself
//! insecure = false                 # plain HTTP or unverified TLS allowed
//! ca_file = "/etc/kboot/ca.pem"    # trusted in addition to the system roots
//! username = "me"
//! password = "secret"
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::auth::Credentials;
use super::error::RegistryError;

/// Retired names kept working: both moved to registry.k8s.io.
const DEFAULT_REWRITES: [(&str, &str); 2] = [
    ("gcr.io/google_containers/", "registry.k8s.io/"),
    ("k8s.gcr.io/", "registry.k8s.io/"),
];

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Rewrite {
    pub from: String,
    pub to: String,
}

#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    pub host: String,
    #[serde(default)]
    pub mirrors: Vec<String>,
    #[serde(default = "yes")]
    pub fallback: bool,
    #[serde(default)]
    pub insecure: bool,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
}

fn yes() -> bool {
    true
}

impl std::fmt::Debug for RegistryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryConfig")
            .field("host", &self.host)
            .field("mirrors", &self.mirrors)
            .field("fallback", &self.fallback)
            .field("insecure", &self.insecure)
            .field("ca_file", &self.ca_file)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    rewrite: Vec<Rewrite>,
    #[serde(default)]
    registry: Vec<RegistryConfig>,
}

/// Everything that decides where and how an image is fetched.
#[derive(Debug, Clone, Default)]
pub struct RegistriesConfig {
    pub rewrites: Vec<Rewrite>,
    pub registries: Vec<RegistryConfig>,
    /// From `--insecure-registry`.
    pub insecure: Vec<String>,
    /// From `--creds`: used for every registry.
    pub creds: Option<Credentials>,
    /// From Docker's config.json, by host.
    pub docker_auths: Vec<(String, Credentials)>,
}

/// One place to try for an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// Registry host as users write it (`docker.io`, `127.0.0.1:5000`).
    pub registry: String,
    pub repository: String,
}

impl RegistriesConfig {
    /// Reads `path` if it exists (user rules come before the built-in ones)
    /// and Docker's config.json from `$DOCKER_CONFIG` or `~/.docker`.
    pub fn load(path: &Path) -> Result<Self, RegistryError> {
        let file: File = match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).map_err(|e| RegistryError::Config {
                path: path.display().to_string(),
                detail: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => File::default(),
            Err(e) => {
                return Err(RegistryError::Config {
                    path: path.display().to_string(),
                    detail: e.to_string(),
                })
            }
        };
        let mut rewrites = file.rewrite;
        rewrites.extend(DEFAULT_REWRITES.iter().map(|(f, t)| Rewrite {
            from: f.to_string(),
            to: t.to_string(),
        }));
        Ok(Self {
            rewrites,
            registries: file.registry,
            docker_auths: docker_config_auths(),
            ..Default::default()
        })
    }

    /// Applies the first matching rewrite to `registry/repository`.
    pub fn rewrite(&self, registry: &str, repository: &str) -> (String, String) {
        let full = format!("{registry}/{repository}");
        for rule in &self.rewrites {
            if let Some(rest) = full.strip_prefix(&rule.from) {
                let new = format!("{}{rest}", rule.to);
                if let Some((reg, repo)) = new.split_once('/') {
                    return (reg.to_string(), repo.to_string());
                }
            }
        }
        (registry.to_string(), repository.to_string())
    }

    pub fn registry(&self, host: &str) -> Option<&RegistryConfig> {
        self.registries.iter().find(|r| r.host == host)
    }

    /// Where to look, in order: the mirrors, then the registry itself unless
    /// its rule forbids falling back.
    pub fn locations(&self, registry: &str, repository: &str) -> Vec<Location> {
        let (registry, repository) = self.rewrite(registry, repository);
        let mut out: Vec<Location> = Vec::new();
        let mut fallback = true;
        if let Some(cfg) = self.registry(&registry) {
            for m in &cfg.mirrors {
                out.push(Location {
                    registry: m.clone(),
                    repository: repository.clone(),
                });
            }
            fallback = cfg.fallback || cfg.mirrors.is_empty();
        }
        if fallback {
            out.push(Location { registry, repository });
        }
        out
    }

    pub fn is_insecure(&self, host: &str) -> bool {
        self.insecure.iter().any(|h| h == host) || self.registry(host).is_some_and(|r| r.insecure)
    }

    pub fn ca_file(&self, host: &str) -> Option<&Path> {
        self.registry(host).and_then(|r| r.ca_file.as_deref())
    }

    /// `--creds`, then registries.toml, then Docker's config.json.
    pub fn credentials(&self, host: &str) -> Option<Credentials> {
        if let Some(c) = &self.creds {
            return Some(c.clone());
        }
        if let Some(r) = self.registry(host) {
            if let (Some(u), Some(p)) = (&r.username, &r.password) {
                return Some(Credentials {
                    username: u.clone(),
                    password: p.clone(),
                });
            }
        }
        let docker_hub = host == "docker.io";
        self.docker_auths
            .iter()
            .find(|(k, _)| {
                let k = k.trim_start_matches("https://").trim_start_matches("http://");
                let k = k.split('/').next().unwrap_or(k);
                k == host || (docker_hub && (k == "index.docker.io" || k == "registry-1.docker.io"))
            })
            .map(|(_, c)| c.clone())
    }
}

fn docker_config_auths() -> Vec<(String, Credentials)> {
    let path = match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) => PathBuf::from(dir).join("config.json"),
        None => match std::env::var_os("HOME") {
            Some(home) => PathBuf::from(home).join(".docker/config.json"),
            None => return Vec::new(),
        },
    };
    parse_docker_config(&std::fs::read(path).unwrap_or_default())
}

pub(crate) fn parse_docker_config(bytes: &[u8]) -> Vec<(String, Credentials)> {
    #[derive(Deserialize)]
    struct Auth {
        auth: Option<String>,
        username: Option<String>,
        password: Option<String>,
    }
    #[derive(Deserialize)]
    struct DockerConfig {
        #[serde(default)]
        auths: std::collections::BTreeMap<String, Auth>,
    }
    let Ok(cfg) = serde_json::from_slice::<DockerConfig>(bytes) else {
        return Vec::new();
    };
    cfg.auths
        .into_iter()
        .filter_map(|(host, a)| {
            let creds = match (a.auth, a.username, a.password) {
                (Some(enc), _, _) => Credentials::from_docker_auth(&enc)?,
                (None, Some(username), Some(password)) => Credentials { username, password },
                _ => return None,
            };
            Some((host, creds))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml: &str) -> RegistriesConfig {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registries.toml");
        std::fs::write(&path, toml).unwrap();
        RegistriesConfig::load(&path).unwrap()
    }

    #[test]
    fn retired_google_names_go_to_registry_k8s_io() {
        let cfg = config("");
        assert_eq!(
            cfg.rewrite("gcr.io", "google_containers/hyperkube-amd64"),
            ("registry.k8s.io".into(), "hyperkube-amd64".into())
        );
        assert_eq!(
            cfg.rewrite("k8s.gcr.io", "pause"),
            ("registry.k8s.io".into(), "pause".into())
        );
        assert_eq!(cfg.rewrite("gcr.io", "other/x"), ("gcr.io".into(), "other/x".into()));
    }

    #[test]
    fn mirrors_come_first_and_fallback_can_be_forbidden() {
        let cfg = config(
            r#"
[[rewrite]]
from = "quay.io/coreos/"
to = "127.0.0.1:5000/coreos/"

[[registry]]
host = "docker.io"
mirrors = ["m1:5000", "m2:5000"]

[[registry]]
host = "127.0.0.1:5000"
mirrors = ["127.0.0.1:6000"]
fallback = false
"#,
        );
        let hosts = |l: Vec<Location>| l.into_iter().map(|l| l.registry).collect::<Vec<_>>();
        assert_eq!(
            hosts(cfg.locations("docker.io", "library/etcd")),
            ["m1:5000", "m2:5000", "docker.io"]
        );
        let l = cfg.locations("quay.io", "coreos/etcd");
        assert_eq!(
            l,
            vec![Location {
                registry: "127.0.0.1:6000".into(),
                repository: "coreos/etcd".into()
            }]
        );
    }

    #[test]
    fn unknown_keys_in_registries_toml_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registries.toml");
        std::fs::write(&path, "[[registry]]\nhost = \"x\"\nmirror = [\"typo\"]\n").unwrap();
        let err = RegistriesConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("registries.toml") && err.contains("mirror"), "{err}");
    }

    #[test]
    fn credentials_prefer_flag_then_file_then_docker_config() {
        let mut cfg = config("[[registry]]\nhost = \"r.example\"\nusername = \"file\"\npassword = \"p\"\n");
        cfg.docker_auths = parse_docker_config(
            br#"{"auths":{"https://index.docker.io/v1/":{"auth":"aHViOmh1Yg=="},"r.example":{"auth":"ZDpk"}}}"#,
        );
        assert_eq!(cfg.credentials("r.example").unwrap().username, "file");
        assert_eq!(cfg.credentials("docker.io").unwrap().username, "hub");
        assert!(cfg.credentials("elsewhere").is_none());
        cfg.creds = Credentials::parse("flag:x");
        assert_eq!(cfg.credentials("r.example").unwrap().username, "flag");
    }
}
