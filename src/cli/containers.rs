//! `run`, `ps`, `logs`, `exec`, `stop`, `start`, `rm`, `down`, and the hidden `shim`.

use crate::shim::launch::{ExecArgs, ShimArgs, SuperviseArgs};
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use super::images::ListFormat;
use super::{Context, RunArgs, UsageError};
use crate::bundle::LocalImages;
use crate::plan::compose::{self, ComposeError};
use crate::shim::log::{self, LogFollower, LogLine, Stream};
use crate::supervisor::{self, ContainerView, RunOptions, RunReport};

#[derive(Debug, Args)]
pub struct PsArgs {
    #[arg(long, value_enum, default_value_t = ListFormat::Table)]
    pub format: ListFormat,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    pub name: String,
    /// Keep printing new output.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only the last N lines.
    #[arg(long, value_name = "N")]
    pub tail: Option<usize>,
}

#[derive(Debug, Args)]
pub struct NamesArgs {
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
    /// Seconds to wait after SIGTERM before SIGKILL (stop, rm).
    #[arg(short = 't', long, default_value_t = 10)]
    pub time: u64,
}

#[derive(Debug, Args)]
pub struct DownArgs {
    /// Also remove data: etcd data, images, PKI.
    #[arg(long)]
    pub purge: bool,
}

/// `run -f FILE` (`run master|worker` is [`super::roles::run_role`], which is [`crate::node::run`]).
pub fn run(ctx: &Context, args: RunArgs) -> anyhow::Result<ExitCode> {
    let Some(file) = &args.file else {
        return Err(UsageError("`kboot run` needs a role (master, worker) or `-f FILE`".into()).into());
    };
    let plan = compose::load(file).map_err(|e| match e {
        ComposeError::Read { .. } => anyhow::Error::new(e),
        other => UsageError(other.to_string()).into(),
    })?;
    let opts = RunOptions {
        detach: args.detach,
        ..RunOptions::default()
    };
    let report = ctx.block_on(supervisor::run_plan(&ctx.paths, &plan, &opts))??;
    print_report(&report)?;
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::EXIT_FAILURE)
    })
}

/// One line per service: `NAME STATUS [detail]`, and a hint where to look on failure.
fn print_report(report: &RunReport) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let width = report.services.iter().map(|s| s.name.len()).max().unwrap_or(0);
    for s in &report.services {
        let detail = match (&s.status[..], s.exit_code, &s.reason) {
            ("running", _, _) => s.pid.map(|p| format!("pid {p}")).unwrap_or_default(),
            (_, Some(code), Some(r)) => format!("exit code {code}: {r}"),
            (_, Some(code), None) => format!("exit code {code}"),
            (_, None, Some(r)) => r.clone(),
            _ => String::new(),
        };
        writeln!(out, "{:width$}  {:10} {detail}", s.name, s.status)?;
    }
    for s in report
        .services
        .iter()
        .filter(|s| s.status == "failed" || (s.status == "exited" && s.exit_code != Some(0)))
    {
        writeln!(out, "see `kboot logs {}`", s.name)?;
    }
    Ok(())
}

pub fn ps(ctx: &Context, args: PsArgs) -> anyhow::Result<ExitCode> {
    let views = supervisor::list(&ctx.paths);
    let mut out = std::io::stdout().lock();
    match args.format {
        ListFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &views)?;
            writeln!(out)?;
        }
        ListFormat::Table => print_table(&mut out, &views)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(out: &mut impl Write, views: &[ContainerView]) -> anyhow::Result<()> {
    let rows: Vec<[String; 6]> = views
        .iter()
        .map(|v| {
            let status = match (&v.reason, v.exit_code, &v.health) {
                (_, _, Some(h)) if v.status == "running" => format!("running ({h})"),
                (Some(r), Some(c), _) if v.status != "running" => format!("{} ({c}, {r})", v.status),
                (None, Some(c), _) if v.status != "running" => format!("{} ({c})", v.status),
                _ => v.status.clone(),
            };
            [
                v.name.clone(),
                v.image.clone(),
                status,
                v.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                v.restarts.to_string(),
                v.exit_code.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let header = ["NAME", "IMAGE", "STATUS", "PID", "RESTARTS", "EXIT"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    for r in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = r.iter().zip(widths).map(|(c, w)| format!("{c:w$}")).collect();
        writeln!(out, "{}", line.join("  ").trim_end())?;
    }
    Ok(())
}

pub fn logs(ctx: &Context, args: LogsArgs) -> anyhow::Result<ExitCode> {
    let dir = ctx.paths.container(&args.name);
    if !dir.exists() {
        anyhow::bail!("no container named `{}` (see `kboot ps`)", args.name);
    }
    let path = dir.log();
    let read_err = || format!("read {}", path.display());
    let mut follower = LogFollower::at_start(&path);
    let mut lines = log::read_rotated(&path).with_context(read_err)?;
    lines.extend(follower.poll().with_context(read_err)?);
    let skip = args.tail.map_or(0, |n| lines.len().saturating_sub(n));
    print_lines(&lines[skip..])?;
    if args.follow {
        loop {
            print_lines(&follower.poll().with_context(read_err)?)?;
            let status = supervisor::inspect(&ctx.paths, &args.name).status;
            if !["running", "starting", "restarting"].contains(&status.as_str()) {
                print_lines(&follower.poll().with_context(read_err)?)?;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Container stdout to our stdout, stderr to our stderr, as written.
#[allow(clippy::print_stderr)]
fn print_lines(lines: &[LogLine]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    for l in lines {
        let end = if l.complete { "\n" } else { "" };
        match l.stream {
            Stream::Stdout => write!(out, "{}{end}", l.text)?,
            Stream::Stderr => write!(err, "{}{end}", l.text)?,
        }
    }
    out.flush()?;
    Ok(())
}

pub fn exec(ctx: &Context, args: ExecArgs) -> anyhow::Result<ExitCode> {
    let code = crate::shim::exec(&ctx.paths, &args.name, args.command)?;
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(255)))
}

pub fn stop(ctx: &Context, args: NamesArgs) -> anyhow::Result<ExitCode> {
    for name in &args.names {
        supervisor::stop(&ctx.paths, name, Duration::from_secs(args.time))?;
        println_name(name)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn println_name(name: &str) -> anyhow::Result<()> {
    writeln!(std::io::stdout().lock(), "{name}")?;
    Ok(())
}

pub fn start(ctx: &Context, args: NamesArgs) -> anyhow::Result<ExitCode> {
    let report = ctx.block_on(supervisor::start(&ctx.paths, &args.names, Duration::from_secs(120)))??;
    print_report(&report)?;
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::EXIT_FAILURE)
    })
}

pub fn rm(ctx: &Context, args: NamesArgs) -> anyhow::Result<ExitCode> {
    let images = LocalImages {
        paths: ctx.paths.clone(),
    };
    for name in &args.names {
        supervisor::remove(&ctx.paths, name, &images, Duration::from_secs(args.time))?;
        println_name(name)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `down`: [`crate::node::down`], each removed container printed as it goes.
pub fn down(ctx: &Context, args: DownArgs) -> anyhow::Result<ExitCode> {
    let mut removed = |name: &str| {
        // A closed stdout must not stop the teardown.
        let _ = println_name(name);
    };
    ctx.block_on(crate::node::down(&ctx.paths, args.purge, &mut removed))??;
    Ok(ExitCode::SUCCESS)
}

/// The hidden per-container shim. Single-threaded: no tokio runtime here.
pub fn shim(ctx: &Context, args: ShimArgs) -> anyhow::Result<ExitCode> {
    let cfg = crate::shim::ShimConfig::from_args(args, ctx.paths.clone());
    let exit = crate::shim::run(&cfg)?;
    Ok(ExitCode::from(u8::try_from(exit.exit_code).unwrap_or(255)))
}

/// The hidden background supervisor (`run --detach`, `start`).
pub fn supervise(ctx: &Context, _args: SuperviseArgs) -> anyhow::Result<ExitCode> {
    let opts = supervisor::SupervisorOptions::default();
    ctx.block_on(supervisor::supervise(&ctx.paths, &opts, supervisor::termination()))??;
    Ok(ExitCode::SUCCESS)
}
