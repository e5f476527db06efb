//! Which manifest of a multi-platform image to use: `OS/ARCH[/VARIANT]`.
//!
//! The variant matters: `linux/arm/v7` is not `linux/arm/v6`. An unspecified
//! variant in the request matches any, except that `arm64` prefers `v8` and
//! treats a missing variant as `v8` (the only one there is in practice).

use std::fmt;
use std::str::FromStr;

use oci_spec::image::{Descriptor, Platform};

/// A platform a user asked for, or the one this host runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformSpec {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid platform {input:?}: expected OS/ARCH or OS/ARCH/VARIANT, e.g. linux/amd64 or linux/arm/v7")]
pub struct PlatformParseError {
    pub input: String,
}

impl FromStr for PlatformSpec {
    type Err = PlatformParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        let bad = || PlatformParseError { input: s.to_string() };
        if parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        match parts.as_slice() {
            [os, arch] => Ok(Self::new(os, arch, None)),
            [os, arch, variant] => Ok(Self::new(os, arch, Some(variant))),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for PlatformSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl PlatformSpec {
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Self {
        let architecture = match architecture {
            "x86_64" | "x86-64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        Self {
            os: os.to_ascii_lowercase(),
            architecture: architecture.to_ascii_lowercase(),
            variant: variant.map(str::to_ascii_lowercase),
        }
    }

    /// The platform this binary runs on, in Go's GOOS/GOARCH names.
    pub fn host() -> Self {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            "arm" => "arm",
            other => other,
        };
        let variant = match arch {
            "arm" => Some("v7"),
            _ => None,
        };
        Self::new(std::env::consts::OS, arch, variant)
    }

    /// Describes a descriptor's platform the way users write it.
    pub fn of(platform: &Platform) -> Self {
        Self::new(
            &platform.os().to_string(),
            &platform.architecture().to_string(),
            platform.variant().as_deref(),
        )
    }

    /// Whether an index entry's platform satisfies this request.
    pub fn matches(&self, platform: &Platform) -> bool {
        let other = Self::of(platform);
        if other.os != self.os || other.architecture != self.architecture {
            return false;
        }
        let normalize = |v: Option<&str>| -> Option<String> {
            match (self.architecture.as_str(), v) {
                ("arm64", None) => Some("v8".into()),
                (_, v) => v.map(str::to_string),
            }
        };
        match (&self.variant, &other.variant) {
            (None, _) if self.architecture != "arm64" => true,
            _ => normalize(self.variant.as_deref()) == normalize(other.variant.as_deref()),
        }
    }

    /// Picks this platform's manifest from an index's entries, or returns the
    /// platforms the index does have (for the error message).
    pub fn choose<'a>(&self, manifests: &'a [Descriptor]) -> Result<&'a Descriptor, Vec<String>> {
        manifests
            .iter()
            .find(|d| d.platform().as_ref().is_some_and(|p| self.matches(p)))
            .ok_or_else(|| {
                manifests
                    .iter()
                    .filter_map(|d| d.platform().as_ref().map(|p| Self::of(p).to_string()))
                    .collect()
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::image::PlatformBuilder;

    fn platform(os: &str, arch: &str, variant: Option<&str>) -> Platform {
        let mut b = PlatformBuilder::default().os(os).architecture(arch);
        if let Some(v) = variant {
            b = b.variant(v);
        }
        b.build().unwrap()
    }

    #[test]
    fn platform_parse_accepts_two_or_three_parts_only() {
        assert_eq!(
            "linux/arm/v7".parse::<PlatformSpec>().unwrap(),
            PlatformSpec::new("linux", "arm", Some("v7"))
        );
        assert_eq!("linux/amd64".parse::<PlatformSpec>().unwrap().variant, None);
        for bad in ["linux", "linux/", "/amd64", "a/b/c/d", ""] {
            assert!(bad.parse::<PlatformSpec>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn platform_arm_variant_must_match() {
        let v7: PlatformSpec = "linux/arm/v7".parse().unwrap();
        assert!(v7.matches(&platform("linux", "arm", Some("v7"))));
        assert!(!v7.matches(&platform("linux", "arm", Some("v6"))));
        assert!(!v7.matches(&platform("linux", "arm64", Some("v8"))));
    }

    #[test]
    fn platform_arm64_matches_v8_and_missing_variant() {
        let arm64: PlatformSpec = "linux/arm64".parse().unwrap();
        assert!(arm64.matches(&platform("linux", "arm64", Some("v8"))));
        assert!(arm64.matches(&platform("linux", "arm64", None)));
        let v8: PlatformSpec = "linux/arm64/v8".parse().unwrap();
        assert!(v8.matches(&platform("linux", "arm64", None)));
    }

    #[test]
    fn platform_choose_lists_available_platforms_when_missing() {
        let descs: Vec<Descriptor> = [("amd64", None), ("arm", Some("v7"))]
            .iter()
            .map(|(arch, v)| {
                let mut d = Descriptor::new(
                    oci_spec::image::MediaType::ImageManifest,
                    1,
                    oci_spec::image::Digest::from_str(&format!("sha256:{}", "a".repeat(64))).unwrap(),
                );
                d.set_platform(Some(platform("linux", arch, *v)));
                d
            })
            .collect();
        let err = "linux/s390x"
            .parse::<PlatformSpec>()
            .unwrap()
            .choose(&descs)
            .unwrap_err();
        assert_eq!(err, vec!["linux/amd64".to_string(), "linux/arm/v7".to_string()]);
        let ok = "linux/arm/v7".parse::<PlatformSpec>().unwrap().choose(&descs).unwrap();
        assert_eq!(ok.platform().as_ref().unwrap().variant().as_deref(), Some("v7"));
    }
}
