//! `plan master|worker`, the role half of `run`, `certs check|renew` and `kubeconfig`.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};

use super::{Context, UsageError};
use crate::pki::{self, BootstrapToken, NodeIdentity, PkiLayout};
use crate::roles::config::{self, Key, Layer, RealHost, Role};
use crate::roles::{self, KubeDirs, RolePlan};

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

/// Resolves the configuration and builds the plan: the one code path `plan` and `run` share.
pub(super) fn resolve_plan(ctx: &Context, role: Role, flags: &RoleFlags) -> anyhow::Result<RolePlan> {
    let usage = |e: &dyn std::fmt::Display| anyhow::Error::new(UsageError(e.to_string()));
    let file =
        config::file_layer(&ctx.paths.node_config()).map_err(|e| usage(&format!("{:#}", anyhow::Error::new(e))))?;
    let env = config::env_layer(|name| std::env::var(name).ok());
    let cfg = config::resolve(role, &flags.layer(), &env, &file, &RealHost::default()).map_err(|e| usage(&e))?;
    let mut plan = roles::build(&cfg, &ctx.paths, &KubeDirs::default()).map_err(|e| usage(&e))?;
    // The boot unit's command: flag and environment values pinned (a unit has neither).
    let pinned: Layer = env.into_iter().chain(flags.layer()).collect();
    let join = crate::service::JoinArgs {
        ca_cert_hash: flags.ca_cert_hash.clone(),
        ca_cert: flags.ca_cert.clone(),
    };
    // Without /proc (a bare chroot), the name it was started by.
    let exe = std::env::current_exe()
        .or_else(|e| std::env::args_os().next().map(std::path::PathBuf::from).ok_or(e))
        .context("find the kboot binary")?;
    plan.command = crate::service::run_command(&exe, &ctx.paths, role, &pinned, &join);
    Ok(plan)
}

#[allow(clippy::print_stdout)]
pub fn plan(ctx: &Context, args: PlanArgs) -> anyhow::Result<ExitCode> {
    let role = parse_role(&args.role)?;
    let plan = resolve_plan(ctx, role, &args.role_flags)?;
    let text = match args.format {
        PlanFormat::Yaml => roles::to_yaml(&plan)?,
        PlanFormat::Json => serde_json::to_string_pretty(&plan)? + "\n",
    };
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
pub fn run_role(ctx: &Context, role: &str, args: &super::RunArgs) -> anyhow::Result<ExitCode> {
    let role = parse_role(role)?;
    let flags = &args.role_flags;
    if flags.wait_ready && !args.detach {
        return Err(UsageError("--wait-ready needs --detach".into()).into());
    }
    // A Ready status older than this run is the previous kubelet's: --wait-ready ignores it.
    let started = std::time::SystemTime::now();
    let plan = resolve_plan(ctx, role, flags)?;
    for w in &plan.warnings {
        eprintln!("kboot: warning: {w}");
    }
    let host = RealHost::default();
    config::verify_ip_address(&plan.config, &host).map_err(|e| UsageError(e.to_string()))?;
    config::verify_cgroup_driver(&plan.config, &host).map_err(|e| UsageError(e.to_string()))?;
    // Worker join parameters are checked before touching the host.
    let join = match role {
        Role::Worker => Some(worker_join_inputs(ctx, flags, &plan)?),
        Role::Master => None,
    };
    roles::check_host_owner(&ctx.paths, &KubeDirs::default())?;
    let preflight_host = crate::preflight::Host::for_paths(&ctx.paths);
    if preflight_host.euid == 0 {
        if let Err(e) = crate::preflight::enable_ip_forward(&preflight_host) {
            eprintln!("kboot: warning: could not enable IPv4 forwarding: {e}");
        }
    }
    crate::preflight::check_node(&preflight_host, &plan.config)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("preflight")?;
    let layout = PkiLayout::new(ctx.paths.pki());
    let id = NodeIdentity::new(plan.config.ip_address, plan.config.master_ip);
    match join {
        None => {
            pki::ensure_master(&layout, &id).context("create the cluster PKI")?;
            // etcd refuses a data directory other users can read.
            let data = ctx.paths.etcd_data();
            std::fs::create_dir_all(&data).with_context(|| format!("create {}", data.display()))?;
            std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o700))
                .with_context(|| format!("chmod 0700 {}", data.display()))?;
            if roles::supports_secure_join(&plan.config) {
                roles::bootstrap::write_generated(&ctx.paths, &layout, &id).context("write the bootstrap objects")?;
            }
        }
        Some((token, hash, ca_pem)) => {
            pki::write_worker_bootstrap(&layout, &ca_pem, &hash, &id.api_server, &token).context("join")?;
        }
    }
    pull_missing_images(ctx, &plan)?;
    // The supervisor and the CRI (another process with --detach) read the choice from here.
    let driver_file = ctx.paths.cgroup_driver_file();
    crate::base::fs::write_atomic(
        &driver_file,
        plan.config.cgroup_driver.as_str().as_bytes(),
        crate::base::fs::Durability::Volatile,
        Some(0o644),
    )
    .with_context(|| format!("record the cgroup driver in {}", driver_file.display()))?;
    let opts = crate::supervisor::RunOptions {
        detach: args.detach,
        ready_timeout: flags.timeout.unwrap_or(DEFAULT_READY_TIMEOUT),
        ..crate::supervisor::RunOptions::default()
    };
    if role == Role::Master {
        print_join(ctx, &plan)?;
    }
    // Foreground: supervises until SIGINT/SIGTERM. Detached: returns once every service runs.
    let report = ctx.block_on(crate::supervisor::run_plan(&ctx.paths, &plan.plan, &opts))??;
    let mut out = std::io::stdout().lock();
    // With --wait-ready, a service restarting now may be waiting for the cluster: flanneld
    // exits until the controller-manager has given its node a pod CIDR (and, on a worker,
    // until the kubelet's TLS bootstrapping has written the credential it uses). Those get
    // until the node is Ready and the timeout once more to run steadily.
    let (late, failed): (Vec<&crate::supervisor::ContainerView>, Vec<_>) = report
        .services
        .iter()
        .filter(|s| s.failed())
        .partition(|s| flags.wait_ready && s.status == "restarting");
    for s in &report.services {
        writeln!(out, "{:<20} {}", s.name, s.status)?;
    }
    for s in &failed {
        print_log_tail(&mut out, ctx, &s.name)?;
    }
    if !failed.is_empty() {
        return Ok(ExitCode::from(super::EXIT_FAILURE));
    }
    if flags.wait_ready {
        let layout = PkiLayout::new(ctx.paths.pki());
        let creds = match role {
            Role::Master => roles::ready::Credentials::admin(&layout),
            Role::Worker => roles::ready::Credentials::kubelet(&layout, &KubeDirs::default()),
        };
        let api = format!("https://{}:6443", plan.config.master_ip);
        let node = plan.config.ip_address.to_string();
        let timeout = flags.timeout.unwrap_or(DEFAULT_READY_TIMEOUT);
        let waited = ctx.block_on(roles::ready::wait_node_ready(
            &creds,
            &api,
            &node,
            started,
            timeout,
            Duration::from_millis(500),
        ))?;
        if let Err(e) = waited {
            writeln!(out, "kboot: {e}")?;
            print_log_tail(&mut out, ctx, "kubelet")?;
            return Ok(ExitCode::from(super::EXIT_FAILURE));
        }
        writeln!(out, "node {node} is Ready")?;
        let late: Vec<String> = late.iter().map(|s| s.name.clone()).collect();
        let still = wait_steadily_running(ctx, &late, std::time::Instant::now() + timeout);
        for name in &still {
            let v = crate::supervisor::inspect(&ctx.paths, name);
            writeln!(
                out,
                "kboot: {name} is not running steadily: {} ({} restarts)",
                v.status, v.restarts
            )?;
            print_log_tail(&mut out, ctx, name)?;
        }
        if !still.is_empty() {
            return Ok(ExitCode::from(super::EXIT_FAILURE));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Running for this long without a restart counts as up (flanneld without a pod CIDR runs
/// about a second before it exits).
const STEADY: Duration = Duration::from_secs(5);

/// Waits until each named container has run for [`STEADY`] without restarting; returns the
/// ones that did not by `deadline`.
fn wait_steadily_running(ctx: &Context, names: &[String], deadline: std::time::Instant) -> Vec<String> {
    let mut since: std::collections::HashMap<&str, (u32, std::time::Instant)> = Default::default();
    loop {
        let now = std::time::Instant::now();
        let pending: Vec<String> = names
            .iter()
            .filter(|n| {
                let v = crate::supervisor::inspect(&ctx.paths, n);
                if v.status != "running" {
                    since.remove(n.as_str());
                    return true;
                }
                let seen = since.entry(n.as_str()).or_insert((v.restarts, now));
                if seen.0 != v.restarts {
                    *seen = (v.restarts, now);
                }
                now.duration_since(seen.1) < STEADY
            })
            .cloned()
            .collect();
        if pending.is_empty() || now >= deadline {
            return pending;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The pull step: every image of the plan that is not in the local store is pulled for the
/// plan's platform (registry settings from `registries.toml`, as `kboot pull`). On an
/// air-gapped host, `kboot load` them first and nothing is fetched.
fn pull_missing_images(ctx: &Context, plan: &RolePlan) -> anyhow::Result<()> {
    use crate::registry::{PlatformSpec, PullOptions, Puller, RegistriesConfig, RegistryClient};
    let store = crate::store::Store::open(&ctx.paths)?;
    let mut missing: Vec<String> = plan
        .plan
        .services
        .iter()
        .map(|s| s.image.clone())
        .chain(plan.plan.files.iter().flat_map(|f| static_pod_images(&f.content)))
        .filter(|image| store.resolve(image).is_err())
        .collect();
    missing.sort();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    let platform: PlatformSpec = plan
        .platform
        .parse()
        .map_err(|e| anyhow::anyhow!("platform {}: {e}", plan.platform))?;
    let config = RegistriesConfig::load(&ctx.paths.registries_config()).map_err(|e| UsageError(e.to_string()))?;
    let puller = Puller {
        client: RegistryClient::new(config),
        store,
        options: PullOptions {
            platform,
            ..PullOptions::default()
        },
    };
    let progress = super::progress::for_terminal(false);
    // Concurrently: a role pulls half a dozen images, and retries of one do not delay the others.
    let results = ctx.block_on(futures_util::future::join_all(
        missing.iter().map(|image| puller.pull(image, progress.as_ref())),
    ))?;
    let failed: Vec<String> = missing
        .iter()
        .zip(results)
        .filter_map(|(image, r)| r.err().map(|e| format!("{image}: {:#}", anyhow::Error::new(e))))
        .collect();
    if failed.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "could not pull {} image(s):\n  {}\non an air-gapped host, `kboot load -i ARCHIVE` them first (see vendor-images.md)",
        failed.len(),
        failed.join("\n  ")
    )
}

/// `image:` lines of a static pod manifest: the kubelet pulls these through kboot's CRI,
/// so they are fetched up front like the rest.
fn static_pod_images(manifest: &str) -> Vec<String> {
    manifest
        .lines()
        .filter_map(|l| l.trim().strip_prefix("image: "))
        .map(String::from)
        .collect()
}

/// The last lines a container wrote, for a failure report.
fn print_log_tail(out: &mut impl Write, ctx: &Context, name: &str) -> std::io::Result<()> {
    writeln!(out, "--- last lines of {name} (`kboot logs {name}` for all) ---")?;
    let log = ctx.paths.container(name).log();
    let lines = crate::shim::log::read_all(&log).unwrap_or_default();
    for l in &lines[lines.len().saturating_sub(20)..] {
        writeln!(out, "{}", l.text)?;
    }
    Ok(())
}

/// How long `run --detach` waits for the services when `--timeout` is not given.
const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(300);

/// Prints where the admin kubeconfig is and the command that joins a worker.
fn print_join(ctx: &Context, plan: &RolePlan) -> anyhow::Result<()> {
    let layout = PkiLayout::new(ctx.paths.pki());
    let mut out = std::io::stdout().lock();
    writeln!(out, "admin kubeconfig: {}", layout.kubeconfig("admin.conf").display())?;
    if !roles::supports_secure_join(&plan.config) {
        return Ok(());
    }
    let ca = std::fs::read_to_string(layout.ca_cert(pki::Authority::Kubernetes))?;
    let token = pki::read_bootstrap_token(&layout)?;
    writeln!(
        out,
        "join a worker:\n  kboot run worker --master {} --token {} --ca-cert-hash {}",
        plan.config.master_ip,
        token.expose(),
        pki::ca_cert_hash(&ca)?
    )?;
    Ok(())
}

/// The token, the CA hash and the master's CA, verified against the hash before preflight
/// or anything else touches the host. The CA comes from `--ca-cert` or, by default, from the
/// master's `cluster-info` (token discovery, as kubeadm).
fn worker_join_inputs(
    ctx: &Context,
    flags: &RoleFlags,
    plan: &RolePlan,
) -> anyhow::Result<(BootstrapToken, String, String)> {
    let token = flags
        .token
        .as_deref()
        .ok_or_else(|| UsageError("a worker needs --token (printed by `kboot run master`)".into()))?;
    let token: BootstrapToken = token.parse().map_err(|e: pki::PkiError| UsageError(e.to_string()))?;
    let hash = flags
        .ca_cert_hash
        .clone()
        .ok_or_else(|| UsageError("a worker needs --ca-cert-hash sha256:HEX (printed by `kboot run master`)".into()))?;
    let ca_pem = match &flags.ca_cert {
        Some(path) => {
            let pem =
                std::fs::read_to_string(path).with_context(|| format!("read the master's CA {}", path.display()))?;
            pki::verify_ca_hash(&pem, &hash).context("join")?;
            pem
        }
        None => {
            let api = format!("https://{}:6443", plan.config.master_ip);
            ctx.block_on(roles::join::discover_ca(&api, &token, &hash))?
                .with_context(|| format!("join: discover the master's CA at {api}"))?
        }
    };
    Ok((token, hash, ca_pem))
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
