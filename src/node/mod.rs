//! A node's lifecycle: `kboot run master|worker` ([`run`]), `kboot plan` ([`plan`]) and
//! `kboot down` ([`down`]), each a sequence of named steps over the modules below (the
//! role's plan, preflight, PKI, images, the supervisor, the CRI, the role's host cleanup).
//!
//! It sits above `roles`, `preflight` and `service` (which use `roles`), so the
//! orchestration lives here and not in `roles`: `roles` stays the pure description of a
//! node (configuration → plan) that `kboot plan` prints. Nothing here prints: progress
//! goes to the caller as [`Notice`]s while it happens, the outcome comes back as a value,
//! and the CLI writes both.

mod down;
mod run;

use std::path::PathBuf;
use std::time::Duration;

pub use down::{down, DownReport};
pub use run::run;

use crate::pki::{BootstrapToken, PkiError};
use crate::registry::RegistryError;
use crate::roles::config::{self, ConfigError, Layer, RealHost, Role};
use crate::roles::{self, KubeDirs, RoleError, RolePlan};
use crate::state::Paths;
use crate::supervisor::{ContainerView, SupervisorError};

/// `run master|worker` and `plan`, as validated by the CLI.
#[derive(Debug, Clone)]
pub struct RoleRequest {
    pub role: Role,
    /// The role settings given as flags (the highest-precedence layer).
    pub flags: Layer,
    /// Worker: the bootstrap token printed by the master.
    pub token: Option<String>,
    /// Worker: `sha256:HEX` of the master CA's public key.
    pub ca_cert_hash: Option<String>,
    /// Worker: the master's CA file, instead of discovering it from the master.
    pub ca_cert: Option<PathBuf>,
    /// Return once every service runs instead of supervising in the foreground.
    pub detach: bool,
    /// With `detach`: return only once the node is Ready.
    pub wait_ready: bool,
    /// How long `detach` waits for the services, and `wait_ready` for the node.
    pub timeout: Option<Duration>,
}

/// How long `run --detach` waits for the services when no timeout is given.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(300);

/// What `run` tells its caller while it goes, in order.
#[derive(Debug)]
pub enum Notice {
    /// Something the user should know that does not stop the run.
    Warning(String),
    /// A master's PKI is in place: where the admin kubeconfig is and, when workers can
    /// join securely, the command that joins one (it holds the bootstrap token).
    Join {
        admin_kubeconfig: PathBuf,
        join_command: Option<String>,
    },
    /// The services have started (or failed to): where each stands.
    Started(Vec<ContainerView>),
    /// `wait_ready`: the node reported Ready.
    Ready { node: String },
}

/// The last lines a container wrote, for a failure report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogTail {
    pub name: String,
    pub lines: Vec<String>,
}

/// How many log lines a failure report shows.
const TAIL_LINES: usize = 20;

impl LogTail {
    pub fn read(paths: &Paths, name: &str) -> Self {
        let lines = crate::shim::log::read_all(&paths.container(name).log()).unwrap_or_default();
        let from = lines.len().saturating_sub(TAIL_LINES);
        Self {
            name: name.to_string(),
            lines: lines.into_iter().skip(from).map(|l| l.text).collect(),
        }
    }
}

/// Why the node is not up though every step ran: one problem, with the log that explains it.
#[derive(Debug)]
pub struct Problem {
    /// What went wrong, when the log alone does not say it.
    pub message: Option<String>,
    pub log: LogTail,
}

/// What `run` ends with: empty `problems` means the node is up (and Ready, if asked).
#[derive(Debug, Default)]
pub struct RunOutcome {
    pub problems: Vec<Problem>,
}

impl RunOutcome {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// `config.toml`, the environment and the flags (usage).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The role's plan (usage).
    #[error(transparent)]
    Build(#[from] RoleError),
    #[error("a worker needs --token (printed by `kboot run master`)")]
    MissingToken,
    #[error("{0}")]
    BadToken(#[source] PkiError),
    #[error("a worker needs --ca-cert-hash sha256:HEX (printed by `kboot run master`)")]
    MissingCaHash,
    #[error("find the kboot binary")]
    FindBinary(#[source] std::io::Error),
    #[error("read the master's CA {}", path.display())]
    ReadMasterCa {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("join")]
    VerifyMasterCa(#[source] PkiError),
    #[error("join: discover the master's CA at {api}")]
    DiscoverCa {
        api: String,
        #[source]
        source: roles::join::JoinError,
    },
    #[error(transparent)]
    HostOwner(RoleError),
    #[error("preflight")]
    Preflight(#[source] crate::preflight::PreflightError),
    #[error("create the cluster PKI")]
    CreatePki(#[source] PkiError),
    #[error("{step} {}", path.display())]
    EtcdData {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("write the bootstrap objects")]
    WriteBootstrap(#[source] PkiError),
    #[error("join")]
    WriteWorkerBootstrap(#[source] PkiError),
    #[error("read the cluster CA {}", path.display())]
    ReadClusterCa {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("read the join parameters")]
    ReadJoin(#[source] PkiError),
    #[error("open the image store")]
    OpenStore(#[source] crate::store::StoreError),
    #[error("platform {platform}: {message}")]
    Platform { platform: String, message: String },
    /// `registries.toml` (usage).
    #[error("{0}")]
    RegistriesConfig(#[source] RegistryError),
    #[error(
        "could not pull {} image(s):\n  {}\non an air-gapped host, `kboot load -i ARCHIVE` them first (see vendor-images.md)",
        failed.len(),
        failed.join("\n  ")
    )]
    Pull { failed: Vec<String> },
    #[error("record the cgroup driver in {}", path.display())]
    RecordCgroupDriver {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Supervisor(#[from] SupervisorError),
    #[error("remove the CRI's pods")]
    RemovePods(#[source] crate::cri::CriError),
    #[error("read /proc/self/mountinfo")]
    ReadMountinfo(#[source] std::io::Error),
    #[error("unmount {}", path.display())]
    Unmount {
        path: PathBuf,
        #[source]
        source: nix::errno::Errno,
    },
    #[error("role cleanup left {} problem(s): {}", errors.len(), errors.join("; "))]
    RoleCleanup { errors: Vec<String> },
}

impl NodeError {
    /// A mistake in what the user asked for (flags, environment, configuration files),
    /// as opposed to a step that failed on the host: the CLI exits 2 for these.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            NodeError::Config(_)
                | NodeError::Build(_)
                | NodeError::MissingToken
                | NodeError::BadToken(_)
                | NodeError::MissingCaHash
                | NodeError::RegistriesConfig(_)
        )
    }
}

/// A worker's bootstrap token and CA hash, both required (checked before anything else
/// `run` or `service install` does).
pub fn worker_credentials(req: &RoleRequest) -> Result<(BootstrapToken, String), NodeError> {
    let token = req.token.as_deref().ok_or(NodeError::MissingToken)?;
    let token: BootstrapToken = token.parse().map_err(NodeError::BadToken)?;
    let ca_cert_hash = req.ca_cert_hash.clone().ok_or(NodeError::MissingCaHash)?;
    Ok((token, ca_cert_hash))
}

/// The role's plan from the layers (flags > environment > `config.toml` > defaults), with
/// the boot unit's command filled in: what `kboot plan` prints and `run` executes.
pub fn plan(paths: &Paths, req: &RoleRequest) -> Result<RolePlan, NodeError> {
    let file = config::file_layer(&paths.node_config())?;
    let env = config::env_layer(|name| std::env::var(name).ok());
    let cfg = config::resolve(req.role, &req.flags, &env, &file, &RealHost::default())?;
    let mut plan = roles::build(&cfg, paths, &KubeDirs::default())?;
    // The boot unit's command: flag and environment values pinned (a unit has neither).
    let pinned: Layer = env.into_iter().chain(req.flags.clone()).collect();
    let join = crate::service::JoinArgs {
        ca_cert_hash: req.ca_cert_hash.clone(),
        ca_cert: req.ca_cert.clone(),
    };
    // Without /proc (a bare chroot), the name it was started by.
    let exe = std::env::current_exe()
        .or_else(|e| std::env::args_os().next().map(PathBuf::from).ok_or(e))
        .map_err(NodeError::FindBinary)?;
    plan.command = crate::service::run_command(&exe, paths, req.role, &pinned, &join);
    Ok(plan)
}
