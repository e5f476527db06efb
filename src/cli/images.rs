//! `pull`, `images`, `rmi`, `prune`, `load`, `save`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use anyhow::Context as _;

use super::progress;
use super::{Context, UsageError};
use crate::registry::auth::Credentials;
use crate::registry::{PlatformSpec, PullOptions, Puller, RegistriesConfig, RegistryClient};
use crate::store::{normalize_reference, Store, StoreError};

#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub enum ListFormat {
    #[default]
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// Platform to pick from a multi-platform image: OS/ARCH[/VARIANT] (default: this host).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// Allow plain HTTP or unverified TLS for this registry (repeatable).
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registry: Vec<String>,
    /// Registry credentials.
    #[arg(long, value_name = "USER:PASS", env = "KBOOT_CREDS", hide_env_values = true)]
    pub creds: Option<String>,
    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,
    /// Images to pull: `etcd`, `registry.k8s.io/pause:3.9`, `name@sha256:…`.
    #[arg(required = true, value_name = "REF")]
    pub refs: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ImagesArgs {
    #[arg(long, value_enum, default_value_t = ListFormat::Table)]
    pub format: ListFormat,
}

#[derive(Debug, Args)]
pub struct RmiArgs {
    #[arg(required = true, value_name = "REF")]
    pub refs: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PruneArgs {}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// docker-save tar, OCI layout directory or tar; plain, gzip or zstd.
    #[arg(short = 'i', long = "input", value_name = "FILE")]
    pub input: PathBuf,
}

#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Where to write the OCI layout tar.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
    #[arg(required = true, value_name = "REF")]
    pub refs: Vec<String>,
}

pub fn pull(ctx: &Context, args: PullArgs) -> anyhow::Result<ExitCode> {
    let platform = match &args.platform {
        Some(p) => p.parse::<PlatformSpec>().map_err(|e| UsageError(e.to_string()))?,
        None => PlatformSpec::host(),
    };
    let mut config = RegistriesConfig::load(&ctx.paths.registries_config()).map_err(|e| UsageError(e.to_string()))?;
    config.insecure.extend(args.insecure_registry.iter().cloned());
    if let Some(c) = &args.creds {
        config.creds = Some(Credentials::parse(c).ok_or_else(|| UsageError("--creds must be USER:PASS".into()))?);
    }
    for r in &args.refs {
        normalize_reference(r).map_err(|e| UsageError(e.to_string()))?;
    }
    let puller = Puller {
        client: RegistryClient::new(config),
        store: open_store(ctx)?,
        options: PullOptions {
            platform,
            ..PullOptions::default()
        },
    };
    let progress = progress::for_terminal(args.quiet);
    let results = ctx.block_on(async {
        let mut results = Vec::new();
        for r in &args.refs {
            results.push((r.clone(), puller.pull(r, progress.as_ref()).await));
        }
        results
    })?;
    let mut out = std::io::stdout().lock();
    let mut failed = Vec::new();
    for (r, result) in results {
        match result {
            Ok(pulled) => writeln!(out, "{}", pulled.pinned())?,
            Err(e) => failed.push(anyhow::Error::new(e).context(format!("pull {r}"))),
        }
    }
    match failed.len() {
        0 => Ok(ExitCode::SUCCESS),
        1 => Err(failed.remove(0)),
        n => {
            let all: Vec<String> = failed.iter().map(|e| format!("{e:#}")).collect();
            anyhow::bail!("{n} images failed:\n  {}", all.join("\n  "))
        }
    }
}

fn open_store(ctx: &Context) -> anyhow::Result<Store> {
    Ok(Store::open(&ctx.paths)?)
}

/// Bad references are usage errors (exit 2), not failures.
fn usage_if_bad_reference(err: StoreError) -> anyhow::Error {
    match err {
        StoreError::InvalidReference { .. } => UsageError(err.to_string()).into(),
        other => other.into(),
    }
}

#[allow(clippy::print_stdout)]
pub fn images(ctx: &Context, args: ImagesArgs) -> anyhow::Result<ExitCode> {
    let list = open_store(ctx)?.list()?;
    let mut out = std::io::stdout().lock();
    match args.format {
        ListFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &list)?;
            writeln!(out)?;
        }
        ListFormat::Table => {
            let width = list.iter().map(|i| i.reference.len()).max().unwrap_or(0).max(9);
            writeln!(out, "{:<width$}  {:<71}  {:>9}", "REFERENCE", "DIGEST", "SIZE")?;
            for image in &list {
                writeln!(
                    out,
                    "{:<width$}  {:<71}  {:>9}",
                    image.reference,
                    image.digest,
                    progress::human_size(image.size)
                )?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn rmi(ctx: &Context, args: RmiArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(ctx)?;
    let removed = store.remove(&args.refs).map_err(usage_if_bad_reference)?;
    let mut out = std::io::stdout().lock();
    for r in removed {
        writeln!(out, "untagged {r}")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Hook for the rootfs cache (`rootfs/<chain-id>`, owned by `unpack`). Once
/// the unpack module is merged this calls
/// `crate::unpack::RootfsCache::new(&ctx.paths).prune(&keep)` with `keep` =
/// `crate::unpack::referenced_chain_ids(store)` plus the chain IDs of every
/// container's image (a container may outlive `rmi` of its image; its lower
/// layer must stay). Until then there is no cache to prune.
/// Removes cached rootfs that neither an image nor a container's mounted view uses.
/// Containers keep their lower rootfs even after their image is removed (`rmi`), so
/// the live overlay mounts count as references too.
fn prune_rootfs_cache(ctx: &Context, store: &Store) -> anyhow::Result<u64> {
    let mut keep = crate::unpack::referenced_chain_ids(store).context("list the rootfs images use")?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").context("read /proc/self/mountinfo")?;
    keep.extend(overlay_lower_chain_ids(&mountinfo, &ctx.paths.rootfs_cache()));
    let freed = crate::unpack::RootfsCache::new(&ctx.paths)
        .prune(&keep)
        .context("prune the rootfs cache")?;
    Ok(freed)
}

/// Chain IDs (directory names under `cache`) used as `lowerdir` by overlay mounts.
fn overlay_lower_chain_ids(mountinfo: &str, cache: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for m in crate::base::mountinfo::parse(mountinfo) {
        if m.fs_type != "overlay" {
            continue;
        }
        if let Some(Some(lower)) = m.super_options.get("lowerdir") {
            for dir in lower.split(':') {
                if let Ok(rest) = std::path::Path::new(dir).strip_prefix(cache) {
                    if let Some(first) = rest.components().next() {
                        out.push(first.as_os_str().to_string_lossy().into_owned());
                    }
                }
            }
        }
    }
    out
}

pub fn prune(ctx: &Context, _args: PruneArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(ctx)?;
    let report = store.prune()?;
    let rootfs_freed = prune_rootfs_cache(ctx, &store)?;
    writeln!(
        std::io::stdout().lock(),
        "removed {} blobs, freed {}",
        report.blobs_removed,
        progress::human_size(report.bytes_freed + rootfs_freed)
    )?;
    Ok(ExitCode::SUCCESS)
}

pub fn load(ctx: &Context, args: LoadArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(ctx)?;
    let loaded = store
        .load(&args.input, &PlatformSpec::host())
        .with_context(|| format!("load {}", args.input.display()))?;
    let mut out = std::io::stdout().lock();
    for image in loaded {
        match image.reference {
            Some(r) => writeln!(out, "{r}@{}", image.manifest_digest)?,
            None => writeln!(out, "{} (unnamed)", image.manifest_digest)?,
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn save(ctx: &Context, args: SaveArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(ctx)?;
    let saved = store
        .save(&args.refs, &args.output)
        .map_err(usage_if_bad_reference)
        .with_context(|| format!("save {}", args.output.display()))?;
    let mut out = std::io::stdout().lock();
    for r in saved {
        writeln!(out, "saved {r}")?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::overlay_lower_chain_ids;

    #[test]
    fn prune_keeps_the_lower_rootfs_of_mounted_container_views() {
        let mountinfo = "36 35 98:0 / /mnt rw - ext4 /dev/vda rw\n\
            90 35 0:50 / /r/containers/etcd/rootfs rw - overlay overlay rw,lowerdir=/r/rootfs/abc123,upperdir=/r/containers/etcd/rootfs-upper,workdir=/r/containers/etcd/rootfs-work\n\
            91 35 0:51 / /other rw - overlay overlay rw,lowerdir=/elsewhere/def,upperdir=/u,workdir=/w\n";
        assert_eq!(
            overlay_lower_chain_ids(mountinfo, std::path::Path::new("/r/rootfs")),
            vec!["abc123"]
        );
    }
}
