//! Kubernetes versions kboot knows how to run, and which image family runs them.
//!
//! kube-deploy defaulted to "latest stable at run time" and broke the day v1.6.0 shipped
//! (kube-deploy #282). kboot pins its default to the version its end-to-end test runs and
//! refuses versions outside the matrix, naming the ones it supports.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// The Kubernetes version kboot runs when none is asked for: the newest v1.34 patch the
/// Go module proxy serves (`go list -m -versions k8s.io/kubernetes`), which the end-to-end
/// test builds.
pub const DEFAULT_K8S_VERSION: KubeVersion = KubeVersion {
    major: 1,
    minor: 34,
    patch: 4,
    pre: None,
};

/// Where the role's images come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// `registry.k8s.io/kube-*` split images plus a third-party kubelet image (v1.34+).
    Modern,
    /// `registry.k8s.io/hyperkube-ARCH` (v1.2 to v1.18), kube-deploy's image.
    Hyperkube,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::Modern, Family::Hyperkube];

    /// Minor versions (of Kubernetes 1.x) this family covers, inclusive.
    pub fn minors(self) -> (u32, u32) {
        match self {
            Family::Modern => (34, 37),
            Family::Hyperkube => (2, 18),
        }
    }

    pub fn covers(self, v: &KubeVersion) -> bool {
        let (lo, hi) = self.minors();
        v.major == 1 && (lo..=hi).contains(&v.minor)
    }

    /// The family that runs `v` when the user did not pick one.
    pub fn for_version(v: &KubeVersion) -> Option<Family> {
        Family::ALL.into_iter().find(|f| f.covers(v))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Family::Modern => "modern",
            Family::Hyperkube => "hyperkube",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Family {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "modern" => Ok(Family::Modern),
            "hyperkube" => Ok(Family::Hyperkube),
            _ => Err(format!("unknown image family {s:?}: use modern or hyperkube")),
        }
    }
}

/// The supported matrix as one line people can read in an error message.
pub fn supported_versions() -> String {
    Family::ALL
        .iter()
        .map(|f| {
            let (lo, hi) = f.minors();
            format!("{f}: v1.{lo}.x to v1.{hi}.x")
        })
        .collect::<Vec<_>>()
        .join("; ")
        + &format!(" (default {DEFAULT_K8S_VERSION})")
}

/// Pre-release tag of a version: kube-deploy's `parse_version` knew alpha and beta; rc is accepted too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PreKind {
    Alpha,
    Beta,
    Rc,
}

/// `vMAJOR.MINOR.PATCH[-(alpha|beta|rc).N]`, as Kubernetes tags its releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KubeVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
    pub pre: Option<(PreKind, u32)>,
}

impl KubeVersion {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self {
            major,
            minor,
            patch,
            pre: None,
        }
    }

    /// True when this version is at least `major.minor` (pre-releases of that minor count).
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }
}

impl fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)?;
        if let Some((kind, n)) = self.pre {
            let kind = match kind {
                PreKind::Alpha => "alpha",
                PreKind::Beta => "beta",
                PreKind::Rc => "rc",
            };
            write!(f, "-{kind}.{n}")?;
        }
        Ok(())
    }
}

impl Serialize for KubeVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

fn number(s: &str) -> Option<u32> {
    // No leading zeros, as kube-deploy's regex: `0|[1-9][0-9]*`.
    if s.is_empty() || (s.len() > 1 && s.starts_with('0')) || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl FromStr for KubeVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not a Kubernetes version: expected vMAJOR.MINOR.PATCH[-alpha.N|-beta.N|-rc.N]");
        let rest = s.strip_prefix('v').ok_or_else(bad)?;
        let (core, pre) = match rest.split_once('-') {
            Some((core, pre)) => (core, Some(pre)),
            None => (rest, None),
        };
        let mut parts = core.split('.');
        let mut next = || parts.next().and_then(number).ok_or_else(bad);
        let (major, minor, patch) = (next()?, next()?, next()?);
        if parts.next().is_some() {
            return Err(bad());
        }
        let pre = match pre {
            None => None,
            Some(pre) => {
                let (kind, n) = pre.split_once('.').ok_or_else(bad)?;
                let kind = match kind {
                    "alpha" => PreKind::Alpha,
                    "beta" => PreKind::Beta,
                    "rc" => PreKind::Rc,
                    _ => return Err(bad()),
                };
                Some((kind, number(n).ok_or_else(bad)?))
            }
        };
        Ok(KubeVersion {
            major,
            minor,
            patch,
            pre,
        })
    }
}

/// The etcd image tag kubeadm shipped with a Kubernetes minor (kboot's default `ETCD_VERSION`).
/// Tags without `-N` name the old per-arch image `etcd-ARCH`, the others the multi-arch `etcd`.
pub fn default_etcd_version(v: &KubeVersion, arch: &str) -> &'static str {
    match v.minor {
        34.. => "3.6.4-0",
        17..=18 => "3.4.3-0",
        16 => "3.3.15-0",
        14..=15 => "3.3.10",
        12..=13 => "3.2.24",
        11 => "3.2.18",
        10 => "3.1.12",
        9 => "3.1.11",
        6..=8 => "3.0.17",
        // kube-deploy: etcd 3.0.4, but 2.2.5 on arm where etcd 3 segfaulted.
        _ if arch == "arm" => "2.2.5",
        _ => "3.0.4",
    }
}

/// kboot's default flannel: a current release that has `--kube-subnet-mgr` and multi-arch images.
pub const DEFAULT_FLANNEL_VERSION: &str = "v0.26.7";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_parse_accepts_release_and_prerelease_tags() {
        let v: KubeVersion = "v1.34.4".parse().unwrap();
        assert_eq!(v, KubeVersion::new(1, 34, 4));
        let v: KubeVersion = "v1.4.0-alpha.3".parse().unwrap();
        assert_eq!(v.pre, Some((PreKind::Alpha, 3)));
        assert_eq!(v.to_string(), "v1.4.0-alpha.3");
        assert_eq!(
            "v1.35.0-rc.1".parse::<KubeVersion>().unwrap().to_string(),
            "v1.35.0-rc.1"
        );
    }

    #[test]
    fn version_parse_rejects_what_kube_deploy_rejected() {
        for bad in [
            "1.34.4",
            "v1.34",
            "v1.034.4",
            "v1.34.4+build",
            "v1.34.4-gamma.1",
            "v1.34.4.1",
            "",
        ] {
            assert!(bad.parse::<KubeVersion>().is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn family_for_version_splits_the_matrix_and_leaves_gaps_uncovered() {
        assert_eq!(Family::for_version(&KubeVersion::new(1, 3, 6)), Some(Family::Hyperkube));
        assert_eq!(
            Family::for_version(&KubeVersion::new(1, 18, 20)),
            Some(Family::Hyperkube)
        );
        assert_eq!(Family::for_version(&DEFAULT_K8S_VERSION), Some(Family::Modern));
        assert_eq!(Family::for_version(&KubeVersion::new(1, 25, 0)), None);
        assert_eq!(Family::for_version(&KubeVersion::new(2, 3, 0)), None);
        assert!(supported_versions().contains("v1.34.4"));
    }
}
