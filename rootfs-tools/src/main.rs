//! `rootfs-tools build …`: one image (one layer) from host paths, `.deb` files and
//! named Debian packages, written as an OCI layout directory or tar.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use rootfs_tools::apt::{self, AptOptions};
use rootfs_tools::{Compression, HostAdd, ImageBuilder, Layer, MediaTypes, Platform};

#[derive(Debug, Parser)]
#[command(name = "rootfs-tools", version, about = "Build OCI images deterministically")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build an image (one layer holding every --add, --deb and --apt, in that order).
    Build(BuildArgs),
}

#[derive(Debug, clap::Args)]
struct BuildArgs {
    /// Host path into the image: SRC:DST[:MODE[:UID:GID]] (MODE octal; owner default 0:0).
    #[arg(long = "add", value_name = "SRC:DST[:MODE[:UID:GID]]")]
    add: Vec<String>,
    /// A .deb file whose files go into the image (no maintainer scripts run).
    #[arg(long = "deb", value_name = "FILE")]
    deb: Vec<PathBuf>,
    /// A Debian package fetched with `apt-get download`, with its dependencies.
    #[arg(long = "apt", value_name = "PKG")]
    apt: Vec<String>,
    /// Dependency never pulled in by --apt.
    #[arg(long = "apt-exclude", value_name = "PKG")]
    apt_exclude: Vec<String>,
    /// Take only the named --apt packages, not their dependencies.
    #[arg(long)]
    apt_no_deps: bool,
    /// Entrypoint, one argument per flag.
    #[arg(long = "entrypoint", value_name = "ARG")]
    entrypoint: Vec<String>,
    /// Cmd, one argument per flag.
    #[arg(long = "cmd", value_name = "ARG")]
    cmd: Vec<String>,
    #[arg(long = "env", value_name = "K=V")]
    env: Vec<String>,
    #[arg(long)]
    workdir: Option<String>,
    #[arg(long)]
    user: Option<String>,
    #[arg(long = "label", value_name = "K=V")]
    label: Vec<String>,
    /// os/arch[/variant].
    #[arg(long, default_value = "linux/amd64")]
    platform: String,
    /// gzip, zstd or none.
    #[arg(long, default_value = "gzip")]
    compression: Compression,
    /// Docker schema 2 media types instead of OCI.
    #[arg(long)]
    docker_media_types: bool,
    /// Output: a directory (OCI layout, created or extended) or FILE.tar.
    #[arg(short = 'o', long = "output", value_name = "DIR|FILE.tar")]
    output: PathBuf,
    /// Tag in index.json.
    #[arg(long, default_value = "latest")]
    tag: String,
    /// Push to REGISTRY/REPO:TAG after building (needs skopeo).
    #[arg(long, value_name = "REGISTRY/REPO:TAG")]
    push: Option<String>,
    /// Allow plain HTTP for --push.
    #[arg(long)]
    insecure: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ROOTFS_TOOLS_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("rootfs-tools: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let Cmd::Build(a) = cli.command;
    let mut layer = Layer::new();
    for spec in &a.add {
        layer = layer.host(HostAdd::parse(spec)?);
    }
    for deb in &a.deb {
        layer = layer.deb(deb);
    }
    let apt_dir = tempdir("apt")?;
    if !a.apt.is_empty() {
        let opts = AptOptions {
            no_deps: a.apt_no_deps,
            exclude: a.apt_exclude.clone(),
        };
        for deb in apt::download(&a.apt, &opts, &apt_dir).context("fetching --apt packages")? {
            layer = layer.deb(deb);
        }
    }
    let platform = Platform::parse(&a.platform)
        .with_context(|| format!("--platform {:?}: expected os/arch[/variant]", a.platform))?;
    let mut image = ImageBuilder::new()
        .layer(layer)
        .platform(platform)
        .compression(a.compression)
        .media_types(if a.docker_media_types {
            MediaTypes::Docker
        } else {
            MediaTypes::Oci
        });
    if !a.entrypoint.is_empty() {
        image = image.entrypoint(a.entrypoint.clone());
    }
    if !a.cmd.is_empty() {
        image = image.cmd(a.cmd.clone());
    }
    for kv in &a.env {
        if !kv.contains('=') {
            bail!("--env {kv:?}: expected KEY=VALUE");
        }
        image = image.env(kv.clone());
    }
    for kv in &a.label {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--label {kv:?}: expected KEY=VALUE"))?;
        image = image.label(k, v);
    }
    if let Some(w) = &a.workdir {
        image = image.working_dir(w.clone());
    }
    if let Some(u) = &a.user {
        image = image.user(u.clone());
    }
    let is_tar = a.output.extension().is_some_and(|e| e == "tar");
    let built = if is_tar {
        image.write_tar(&a.output, &a.tag)?
    } else {
        image.write_layout(&a.output, &a.tag)?
    };
    let _ = std::fs::remove_dir_all(&apt_dir);
    if let Some(target) = &a.push {
        let dir = if is_tar {
            let dir = tempdir("push")?;
            image.write_layout(&dir, &a.tag)?;
            dir
        } else {
            a.output.clone()
        };
        rootfs_tools::push(&dir, &a.tag, target, a.insecure)?;
        if is_tar {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    #[allow(clippy::print_stdout)]
    {
        println!("{}", built.manifest.digest);
    }
    Ok(())
}

fn tempdir(what: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("rootfs-tools-{what}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}
