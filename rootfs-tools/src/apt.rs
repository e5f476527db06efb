//! Named Debian packages fetched with `apt-get download` (the host's apt sources),
//! with their `Depends`/`Pre-Depends` followed: first installable alternative of each
//! `a | b` group, version constraints ignored (the host's candidate is taken).

use std::collections::{BTreeSet, HashMap};
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
///
/// Breadth first, one `apt-cache show` for every package (and alternative) a level names:
/// on a loaded two-core machine each `apt-cache` run costs seconds (it loads the whole
/// package cache), and one per package made resolving curl and bind9-dnsutils take minutes.
pub fn resolve(names: &[String], opts: &AptOptions) -> Result<Vec<String>> {
    let exclude: BTreeSet<&str> = opts.exclude.iter().map(String::as_str).collect();
    let mut known: HashMap<String, Option<Fields>> = HashMap::new();
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut level: Vec<String> = names.to_vec();
    while !level.is_empty() {
        lookup(&level, &mut known)?;
        let mut groups = Vec::new();
        for pkg in std::mem::take(&mut level) {
            if done.contains(&pkg) {
                continue;
            }
            let fields = known
                .get(&pkg)
                .and_then(Option::as_ref)
                .ok_or_else(|| BuildError::Apt {
                    reason: format!("no installable candidate for {pkg:?} (run `apt-get update`?)"),
                })?;
            if !opts.no_deps {
                groups.extend(fields.depends.iter().map(|g| (pkg.clone(), g.clone())));
            }
            done.insert(pkg);
        }
        // Every alternative of this level's dependencies in one lookup, then the first
        // installable one of each group (none when one is excluded or already taken).
        let alternatives: Vec<String> = groups.iter().flat_map(|(_, g)| g.iter().cloned()).collect();
        lookup(&alternatives, &mut known)?;
        for (pkg, group) in groups {
            if group
                .iter()
                .any(|alt| exclude.contains(alt.as_str()) || done.contains(alt))
            {
                continue;
            }
            match group.iter().find(|alt| matches!(known.get(*alt), Some(Some(_)))) {
                Some(dep) => level.push(dep.clone()),
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

#[derive(Debug)]
struct Fields {
    depends: Vec<Vec<String>>,
}

/// Records in `known` the `apt-cache show` of each candidate in `pkgs` not known yet, in one
/// run; `None` for a virtual or unknown package (apt-cache prints no record for those).
fn lookup(pkgs: &[String], known: &mut HashMap<String, Option<Fields>>) -> Result<()> {
    let ask: BTreeSet<&str> = pkgs
        .iter()
        .map(String::as_str)
        .filter(|p| !known.contains_key(*p))
        .collect();
    if ask.is_empty() {
        return Ok(());
    }
    let out = Command::new("apt-cache")
        .args(["show", "--no-all-versions"])
        .args(&ask)
        .output()
        .map_err(|e| BuildError::Apt {
            reason: format!("cannot run apt-cache: {e}"),
        })?;
    let mut found = parse_records(&String::from_utf8_lossy(&out.stdout));
    for pkg in ask {
        known.insert(pkg.to_owned(), found.remove(pkg));
    }
    Ok(())
}

/// `apt-cache show` output (records separated by blank lines) by package name.
fn parse_records(text: &str) -> HashMap<String, Fields> {
    let mut records = HashMap::new();
    for record in text.split("\n\n") {
        let mut name = None;
        let mut depends = Vec::new();
        for line in record.lines() {
            if let Some(n) = line.strip_prefix("Package:") {
                name = Some(n.trim().to_owned());
            } else if let Some(list) = line
                .strip_prefix("Depends:")
                .or_else(|| line.strip_prefix("Pre-Depends:"))
            {
                depends.extend(parse_depends(list));
            }
        }
        if let Some(name) = name {
            records.entry(name).or_insert(Fields { depends });
        }
    }
    records
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
    fn records_are_read_per_package_from_one_apt_cache_run() {
        let text =
            "Package: curl\nVersion: 7.88\nDepends: libc6 (>= 2.34), libcurl4 (= 7.88)\nDescription: x\n continued\n\n\
                    Package: libc-bin\nPre-Depends: libc6 (>> 2.36)\nDepends: debconf | debconf-2.0\n\n";
        let records = parse_records(text);
        assert_eq!(records.len(), 2);
        assert_eq!(
            records["curl"].depends,
            vec![vec!["libc6".to_string()], vec!["libcurl4".into()]]
        );
        assert_eq!(
            records["libc-bin"].depends,
            vec![vec!["libc6".to_string()], vec!["debconf".into(), "debconf-2.0".into()]]
        );
        assert!(
            parse_records("").is_empty(),
            "virtual or unknown packages print no record"
        );
    }

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
