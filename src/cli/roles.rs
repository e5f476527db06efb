//! `plan master|worker`, the role half of `run`, `certs check|renew` and `kubeconfig`.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};

use super::{Context, UsageError};
use crate::node::{self, LogTail, Notice, RoleRequest};
use crate::pki::{self, PkiLayout};
use crate::roles;
use crate::roles::config::{Key, Layer, Role};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PlanFormat {
    Yaml,
    Json,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// `master` or `worker`.
    pub role: String,
    #[arg(long, value_enum, default_value_t = PlanFormat::Yaml)]
    pub format: PlanFormat,
    #[command(flatten)]
    pub role_flags: RoleFlags,
}

/// `run master|worker` and `plan` flags. Each also reads kube-deploy's environment
/// variable and `config.toml`; precedence: flag > environment > file > default.
#[derive(Debug, Default, Args)]
pub struct RoleFlags {
    /// Kubernetes version, e.g. v1.34.4 [env K8S_VERSION].
    #[arg(long, value_name = "VERSION")]
    pub k8s_version: Option<String>,
    /// Image family: modern (v1.34+) or hyperkube (v1.2–v1.18) [env KBOOT_FAMILY; default: from the version].
    #[arg(long, value_name = "FAMILY")]
    pub family: Option<String>,
    /// etcd image tag [env ETCD_VERSION; default: kubeadm's for the version].
    #[arg(long, value_name = "TAG")]
    pub etcd_version: Option<String>,
    /// flannel version [env FLANNEL_VERSION].
    #[arg(long, value_name = "VERSION")]
    pub flannel_version: Option<String>,
    /// Pod network [env FLANNEL_NETWORK; default 10.1.0.0/16].
    #[arg(long, value_name = "CIDR")]
    pub flannel_network: Option<String>,
    /// flannel backend: udp, vxlan, host-gw, wireguard [env FLANNEL_BACKEND; default udp].
    #[arg(long, value_name = "TYPE")]
    pub flannel_backend: Option<String>,
    /// Masquerade traffic leaving the pod network [env FLANNEL_IPMASQ; default true].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub flannel_ipmasq: Option<String>,
    /// Restart policy of kboot's containers [env RESTART_POLICY; default unless-stopped].
    #[arg(long, value_name = "POLICY")]
    pub restart: Option<String>,
    /// The master's address: required for a worker; a master advertises it [env MASTER_IP].
    #[arg(long, value_name = "IP")]
    pub master: Option<String>,
    /// This node's address and name [env IP_ADDRESS; default: the default-route interface's].
    #[arg(long, value_name = "IP")]
    pub ip_address: Option<String>,
    /// Run flannel and give pods a network through CNI [env USE_CNI; default false].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub use_cni: Option<String>,
    /// Legacy containerized kubelet (hyperkube ≤ v1.15) [env USE_CONTAINERIZED].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub use_containerized: Option<String>,
    /// Image architecture: amd64, arm64, arm, ppc64le [env ARCH; default: this machine].
    #[arg(long, value_name = "ARCH")]
    pub arch: Option<String>,
    /// Seconds to wait for each service to become healthy [env TIMEOUT_FOR_SERVICES; default 20].
    #[arg(long, value_name = "SECONDS")]
    pub timeout_for_services: Option<String>,
    /// cgroup driver of kboot's containers and the kubelet: cgroupfs or systemd
    /// [env KBOOT_CGROUP_DRIVER; default: systemd where it is PID 1 on a cgroup v2 host, else cgroupfs].
    #[arg(long, value_name = "DRIVER")]
    pub cgroup_driver: Option<String>,
    /// Worker: the bootstrap token printed by the master [env KBOOT_TOKEN].
    #[arg(long, value_name = "TOKEN", env = "KBOOT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Worker: `sha256:HEX` of the master CA's public key, printed by the master [env KBOOT_CA_CERT_HASH].
    #[arg(long, value_name = "sha256:HEX", env = "KBOOT_CA_CERT_HASH")]
    pub ca_cert_hash: Option<String>,
    /// Worker: the master's CA certificate file, instead of fetching it from the master's cluster-info;
    /// checked against --ca-cert-hash either way.
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// With --detach: return only once the node is Ready.
    #[arg(long)]
    pub wait_ready: bool,
    /// With --wait-ready: give up after this long (e.g. 300s, 5m).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, mult) = match s.as_bytes().last() {
        Some(b's') => (&s[..s.len() - 1], 1),
        Some(b'm') => (&s[..s.len() - 1], 60),
        Some(b'h') => (&s[..s.len() - 1], 3600),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .map(|n| Duration::from_secs(n * mult))
        .map_err(|_| format!("{s:?} is not a duration: use e.g. 90, 90s, 5m or 1h"))
}

impl RoleFlags {
    fn layer(&self) -> Layer {
        let pairs = [
            (Key::K8sVersion, &self.k8s_version),
            (Key::Family, &self.family),
            (Key::EtcdVersion, &self.etcd_version),
            (Key::FlannelVersion, &self.flannel_version),
            (Key::FlannelNetwork, &self.flannel_network),
            (Key::FlannelBackend, &self.flannel_backend),
            (Key::FlannelIpmasq, &self.flannel_ipmasq),
            (Key::RestartPolicy, &self.restart),
            (Key::MasterIp, &self.master),
            (Key::IpAddress, &self.ip_address),
            (Key::UseCni, &self.use_cni),
            (Key::UseContainerized, &self.use_containerized),
            (Key::Arch, &self.arch),
            (Key::TimeoutForServices, &self.timeout_for_services),
            (Key::CgroupDriver, &self.cgroup_driver),
        ];
        pairs
            .into_iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
            .collect()
    }
}

fn parse_role(role: &str) -> anyhow::Result<Role> {
    role.parse::<Role>().map_err(|e| UsageError(e).into())
}

impl RoleFlags {
    /// What `node` needs from these flags.
    pub(super) fn request(&self, role: Role, detach: bool) -> RoleRequest {
        RoleRequest {
            role,
            flags: self.layer(),
            token: self.token.clone(),
            ca_cert_hash: self.ca_cert_hash.clone(),
            ca_cert: self.ca_cert.clone(),
            detach,
            wait_ready: self.wait_ready,
            timeout: self.timeout,
        }
    }
}

#[allow(clippy::print_stdout)]
pub fn plan(ctx: &Context, args: PlanArgs) -> anyhow::Result<ExitCode> {
    let role = parse_role(&args.role)?;
    let plan = node::plan(&ctx.paths, &args.role_flags.request(role, false))?;
    let text = match args.format {
        PlanFormat::Yaml => roles::to_yaml(&plan)?,
        PlanFormat::Json => serde_json::to_string_pretty(&plan)? + "\n",
    };
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// `run master|worker`: [`node::run`], its notices printed as they come, then its outcome.
#[allow(clippy::print_stdout)]
pub fn run_role(ctx: &Context, role: &str, args: &super::RunArgs) -> anyhow::Result<ExitCode> {
    let role = parse_role(role)?;
    if args.role_flags.wait_ready && !args.detach {
        return Err(UsageError("--wait-ready needs --detach".into()).into());
    }
    let req = args.role_flags.request(role, args.detach);
    let progress = super::progress::for_terminal(false);
    let mut notice = |n: Notice| {
        // A closed stdout must not stop the node coming up.
        let _ = print_notice(n);
    };
    let outcome = ctx.block_on(node::run(&ctx.paths, &req, progress.as_ref(), &mut notice))??;
    let mut out = std::io::stdout().lock();
    for p in &outcome.problems {
        if let Some(m) = &p.message {
            writeln!(out, "kboot: {m}")?;
        }
        print_log_tail(&mut out, &p.log)?;
    }
    Ok(if outcome.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::EXIT_FAILURE)
    })
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
fn print_notice(notice: Notice) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match notice {
        Notice::Warning(w) => eprintln!("kboot: warning: {w}"),
        Notice::Join {
            admin_kubeconfig,
            join_command,
        } => {
            writeln!(out, "admin kubeconfig: {}", admin_kubeconfig.display())?;
            if let Some(cmd) = join_command {
                writeln!(out, "join a worker:\n  {cmd}")?;
            }
        }
        Notice::Started(services) => {
            for s in &services {
                writeln!(out, "{:<20} {}", s.name, s.status)?;
            }
        }
        Notice::Ready { node } => writeln!(out, "node {node} is Ready")?,
    }
    Ok(())
}

/// The last lines a container wrote, for a failure report.
fn print_log_tail(out: &mut impl Write, tail: &LogTail) -> std::io::Result<()> {
    let name = &tail.name;
    writeln!(out, "--- last lines of {name} (`kboot logs {name}` for all) ---")?;
    for l in &tail.lines {
        writeln!(out, "{l}")?;
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct CertsArgs {
    #[command(subcommand)]
    pub command: CertsCommand,
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Show every certificate's expiry.
    Check {
        #[arg(long, value_enum, default_value_t = super::images::ListFormat::Table)]
        format: super::images::ListFormat,
    },
    /// Re-sign leaf certificates (all, or those named) with the same CA and keys.
    Renew {
        /// Certificate names as `check` shows them (apiserver, etcd/server, admin, …).
        #[arg(value_name = "NAME")]
        names: Vec<String>,
    },
}

#[allow(clippy::print_stdout)]
pub fn certs(ctx: &Context, args: CertsArgs) -> anyhow::Result<ExitCode> {
    let layout = PkiLayout::new(ctx.paths.pki());
    match args.command {
        CertsCommand::Check { format } => {
            let list = pki::check(&layout)?;
            let mut out = std::io::stdout().lock();
            match format {
                super::images::ListFormat::Json => {
                    writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
                }
                super::images::ListFormat::Table => {
                    let rows: Vec<[String; 4]> = list
                        .iter()
                        .map(|c| {
                            [
                                c.name.clone(),
                                c.not_after.clone(),
                                format!("{}d", c.days_left),
                                if c.is_ca { "yes".into() } else { "no".into() },
                            ]
                        })
                        .collect();
                    write_table(&mut out, ["NAME", "EXPIRES", "RESIDUAL", "CA"], &rows)?;
                }
            }
        }
        CertsCommand::Renew { names } => {
            let renewed = pki::renew(&layout, &names)?;
            let mut out = std::io::stdout().lock();
            for n in renewed {
                writeln!(out, "renewed {n}")?;
            }
            writeln!(
                out,
                "components read their certificates when they start: restart the node to use the new ones \
                 (`kboot down && kboot run master`; etcd data and the PKI are kept)"
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// An aligned table: columns padded to their widest cell.
fn write_table<const N: usize>(out: &mut impl Write, header: [&str; N], rows: &[[String; N]]) -> std::io::Result<()> {
    let mut widths = header.map(str::len);
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for r in rows {
        writeln!(out, "{}", line(r.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct KubeconfigArgs {}

/// Prints the admin kubeconfig (self-contained; certificates embedded).
pub fn kubeconfig(ctx: &Context, _args: KubeconfigArgs) -> anyhow::Result<ExitCode> {
    let layout = PkiLayout::new(ctx.paths.pki());
    let path = layout.kubeconfig("admin.conf");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("read {} (run `kboot run master` first)", path.display()))?;
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
