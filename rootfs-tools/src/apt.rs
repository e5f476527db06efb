//! Named Debian packages fetched with `apt-get download` (the host's apt sources),
//! with their `Depends`/`Pre-Depends` followed: first installable alternative of each
//! `a | b` group, version constraints ignored (the host's candidate is taken).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{BuildError, Result};

/// How to resolve named packages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AptOptions {
    /// Do not follow dependencies: only the named packages.
    pub no_deps: bool,
    /// Packages never pulled in as dependencies (e.g. `adduser`, `init-system-helpers`
    /// for a single-binary image).
    pub exclude: Vec<String>,
}

/// The packages `names` pulls in (sorted, names included).
pub fn resolve(names: &[String], opts: &AptOptions) -> Result<Vec<String>> {
    let exclude: BTreeSet<&str> = opts.exclude.iter().map(String::as_str).collect();
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut todo: Vec<String> = names.to_vec();
    while let Some(pkg) = todo.pop() {
        if done.contains(&pkg) {
            continue;
        }
        let fields = show(&pkg)?.ok_or_else(|| BuildError::Apt {
            reason: format!("no installable candidate for {pkg:?} (run `apt-get update`?)"),
        })?;
        done.insert(pkg.clone());
        if opts.no_deps {
            continue;
        }
        for group in fields.depends {
            let mut chosen = None;
            for alt in &group {
                if exclude.contains(alt.as_str()) || done.contains(alt) {
                    chosen = Some(None);
                    break;
                }
                if show(alt)?.is_some() {
                    chosen = Some(Some(alt.clone()));
                    break;
                }
            }
            match chosen {
                Some(Some(dep)) => todo.push(dep),
                Some(None) => {}
                None => tracing::warn!(package = %pkg, ?group, "no installable alternative; skipped"),
            }
        }
    }
    Ok(done.into_iter().collect())
}

/// Downloads `names` (and their dependencies unless `opts.no_deps`) into `dest`;
/// returns the `.deb` paths, sorted by package name.
pub fn download(names: &[String], opts: &AptOptions, dest: &Path) -> Result<Vec<PathBuf>> {
    let pkgs = resolve(names, opts)?;
    std::fs::create_dir_all(dest).map_err(crate::error::io("create", dest))?;
    let out = Command::new("apt-get")
        .arg("download")
        .arg("-q")
        .args(&pkgs)
        .current_dir(dest)
        .output()
        .map_err(|e| BuildError::Apt {
            reason: format!("cannot run apt-get: {e}"),
        })?;
    if !out.status.success() {
        return Err(BuildError::Apt {
            reason: format!(
                "apt-get download {} failed: {}",
                pkgs.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    let mut debs = Vec::new();
    for pkg in &pkgs {
        let prefix = format!("{pkg}_");
        let found = std::fs::read_dir(dest)
            .map_err(crate::error::io("read", dest))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .map(|n| n.to_string_lossy())
                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
            });
        debs.push(found.ok_or_else(|| BuildError::Apt {
            reason: format!("apt-get download left no .deb for {pkg} in {}", dest.display()),
        })?);
    }
    Ok(debs)
}

struct Fields {
    depends: Vec<Vec<String>>,
}

/// `apt-cache show` of the candidate; `None` for a virtual or unknown package.
fn show(pkg: &str) -> Result<Option<Fields>> {
    let out = Command::new("apt-cache")
        .args(["show", "--no-all-versions", pkg])
        .output()
        .map_err(|e| BuildError::Apt {
            reason: format!("cannot run apt-cache: {e}"),
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !text.lines().any(|l| l.starts_with("Package:")) {
        return Ok(None);
    }
    let mut depends = Vec::new();
    for line in text.lines() {
        let Some(list) = line
            .strip_prefix("Depends:")
            .or_else(|| line.strip_prefix("Pre-Depends:"))
        else {
            continue;
        };
        depends.extend(parse_depends(list));
    }
    Ok(Some(Fields { depends }))
}

/// `a (>= 1), b:any | c` → `[[a], [b, c]]`.
fn parse_depends(list: &str) -> Vec<Vec<String>> {
    list.split(',')
        .map(|group| {
            group
                .split('|')
                .filter_map(|alt| {
                    let name = alt.trim().split([' ', '(']).next()?.split(':').next()?;
                    (!name.is_empty()).then(|| name.to_string())
                })
                .collect::<Vec<_>>()
        })
        .filter(|g| !g.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_groups_strip_versions_and_arch() {
        assert_eq!(
            parse_depends(" adduser, libc6 (>= 2.34), debconf (>= 0.5) | debconf-2.0, perl:any"),
            vec![
                vec!["adduser".to_string()],
                vec!["libc6".into()],
                vec!["debconf".into(), "debconf-2.0".into()],
                vec!["perl".into()],
            ]
        );
    }
}
