//! `kboot run master|worker`: the steps, in order. Each step is a function whose error
//! names it; [`run`] only sequences them.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use super::{LogTail, NodeError, Notice, Problem, RoleRequest, RunOutcome, DEFAULT_READY_TIMEOUT};
use crate::base::fs::{write_atomic, Durability};
use crate::pki::{self, BootstrapToken, NodeIdentity, PkiLayout};
use crate::registry::{PlatformSpec, Progress, PullOptions, Puller, RegistriesConfig, RegistryClient};
use crate::roles::config::{self, RealHost, Role};
use crate::roles::{self, KubeDirs, RolePlan};
use crate::state::Paths;
use crate::supervisor::{self, ContainerView, RunOptions};

/// A worker's verified join parameters.
struct JoinInputs {
    token: BootstrapToken,
    ca_cert_hash: String,
    ca_pem: String,
}

/// Brings the role up: plan, host checks, PKI, images, then the services (supervised in
/// the foreground until SIGINT/SIGTERM, or by a background supervisor with `detach`).
/// `notice` hears what happens while it happens; `progress` the image pulls.
pub async fn run(
    paths: &Paths,
    req: &RoleRequest,
    progress: &dyn Progress,
    notice: &mut (dyn FnMut(Notice) + Send),
) -> Result<RunOutcome, NodeError> {
    // A Ready status older than this run is the previous kubelet's: `wait_ready` ignores it.
    let started = SystemTime::now();
    let plan = super::plan(paths, req)?;
    for w in &plan.warnings {
        notice(Notice::Warning(w.clone()));
    }
    verify_host(&plan)?;
    // Worker join parameters are checked before touching the host.
    let join = match req.role {
        Role::Worker => Some(worker_join_inputs(req, &plan, notice).await?),
        Role::Master => None,
    };
    roles::check_host_owner(paths, &KubeDirs::default()).map_err(NodeError::HostOwner)?;
    preflight(paths, &plan, notice)?;
    match join {
        None => master_pki(paths, &plan)?,
        Some(join) => worker_pki(paths, &plan, &join)?,
    }
    pull_missing_images(paths, &plan, progress).await?;
    record_cgroup_driver(paths, &plan)?;
    if req.role == Role::Master {
        notice(join_notice(paths, &plan)?);
    }
    let timeout = req.timeout.unwrap_or(DEFAULT_READY_TIMEOUT);
    let opts = RunOptions {
        detach: req.detach,
        ready_timeout: timeout,
        ..RunOptions::default()
    };
    // Foreground: supervises until SIGINT/SIGTERM. Detached: returns once every service runs.
    let report = supervisor::run_plan(paths, &plan.plan, &opts).await?;
    // With `wait_ready`, a service restarting now may be waiting for the cluster: flanneld
    // exits until the controller-manager has given its node a pod CIDR (and, on a worker,
    // until the kubelet's TLS bootstrapping has written the credential it uses). Those get
    // until the node is Ready and the timeout once more to run steadily.
    let (late, failed): (Vec<&ContainerView>, Vec<_>) = report
        .services
        .iter()
        .filter(|s| s.failed())
        .partition(|s| req.wait_ready && s.status == "restarting");
    let late: Vec<String> = late.iter().map(|s| s.name.clone()).collect();
    let failed: Vec<Problem> = failed
        .iter()
        .map(|s| Problem {
            message: None,
            log: LogTail::read(paths, &s.name),
        })
        .collect();
    notice(Notice::Started(report.services.clone()));
    if !failed.is_empty() || !req.wait_ready {
        return Ok(RunOutcome { problems: failed });
    }
    wait_ready(paths, &plan, started, timeout, &late, notice).await
}

/// `IP_ADDRESS` is this host's, and the host can use the cgroup driver: `plan` may describe
/// another node, `run` may not.
fn verify_host(plan: &RolePlan) -> Result<(), NodeError> {
    let host = RealHost::default();
    config::verify_ip_address(&plan.config, &host)?;
    config::verify_cgroup_driver(&plan.config, &host)?;
    Ok(())
}

/// The token, the CA hash and the master's CA, verified against the hash before preflight
/// or anything else touches the host. The CA comes from `ca_cert` or, by default, from the
/// master's `cluster-info` (token discovery, as kubeadm).
/// A worker may start before its master is up (both booting together): discovery waits
/// for the master as kubeadm's does, and says what it waits for.
async fn worker_join_inputs(
    req: &RoleRequest,
    plan: &RolePlan,
    notice: &mut (dyn FnMut(Notice) + Send),
) -> Result<JoinInputs, NodeError> {
    let (token, ca_cert_hash) = super::worker_credentials(req)?;
    let ca_pem = match &req.ca_cert {
        Some(path) => {
            let pem = std::fs::read_to_string(path).map_err(|source| NodeError::ReadMasterCa {
                path: path.clone(),
                source,
            })?;
            pki::verify_ca_hash(&pem, &ca_cert_hash).map_err(NodeError::VerifyMasterCa)?;
            pem
        }
        None => {
            let api = api_server(plan);
            let mut waiting = |e: &roles::join::JoinError| {
                notice(Notice::Warning(format!(
                    "waiting for the master at {api}: {}",
                    crate::base::error::chain(e)
                )))
            };
            let patience = roles::join::Patience::default();
            roles::join::discover_ca_waiting(&api, &token, &ca_cert_hash, patience, &mut waiting)
                .await
                .map_err(|source| NodeError::DiscoverCa { api, source })?
        }
    };
    Ok(JoinInputs {
        token,
        ca_cert_hash,
        ca_pem,
    })
}

fn api_server(plan: &RolePlan) -> String {
    format!("https://{}:6443", plan.config.master_ip)
}

/// Host checks; as root, IPv4 forwarding is switched on first (a warning if it cannot be).
fn preflight(paths: &Paths, plan: &RolePlan, notice: &mut (dyn FnMut(Notice) + Send)) -> Result<(), NodeError> {
    let host = crate::preflight::Host::for_paths(paths);
    if host.euid == 0 {
        if let Err(e) = crate::preflight::enable_ip_forward(&host) {
            notice(Notice::Warning(format!("could not enable IPv4 forwarding: {e}")));
        }
    }
    crate::preflight::check_node(&host, &plan.config).map_err(NodeError::Preflight)
}

fn identity(plan: &RolePlan) -> NodeIdentity {
    NodeIdentity::new(plan.config.ip_address, plan.config.master_ip)
}

/// The cluster PKI, etcd's data directory and (when workers can join) the bootstrap objects.
fn master_pki(paths: &Paths, plan: &RolePlan) -> Result<(), NodeError> {
    let layout = PkiLayout::new(paths.pki());
    let id = identity(plan);
    pki::ensure_master(&layout, &id).map_err(NodeError::CreatePki)?;
    // etcd refuses a data directory other users can read.
    let data = paths.etcd_data();
    let etcd_data = |step| {
        let path = data.clone();
        move |source| NodeError::EtcdData { step, path, source }
    };
    std::fs::create_dir_all(&data).map_err(etcd_data("create"))?;
    std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .map_err(etcd_data("chmod 0700"))?;
    if roles::supports_secure_join(&plan.config) {
        roles::bootstrap::write_generated(paths, &layout, &id).map_err(NodeError::WriteBootstrap)?;
    }
    Ok(())
}

/// The master's CA and the bootstrap kubeconfig the worker's kubelet joins with.
fn worker_pki(paths: &Paths, plan: &RolePlan, join: &JoinInputs) -> Result<(), NodeError> {
    let layout = PkiLayout::new(paths.pki());
    let id = identity(plan);
    pki::write_worker_bootstrap(&layout, &join.ca_pem, &join.ca_cert_hash, &id.api_server, &join.token)
        .map_err(NodeError::WriteWorkerBootstrap)
}

/// Every image of the plan that is not in the local store, pulled for the plan's platform
/// (registry settings from `registries.toml`, as `kboot pull`). On an air-gapped host,
/// `kboot load` them first and nothing is fetched.
async fn pull_missing_images(paths: &Paths, plan: &RolePlan, progress: &dyn Progress) -> Result<(), NodeError> {
    let store = crate::store::Store::open(paths).map_err(NodeError::OpenStore)?;
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
    let platform: PlatformSpec = plan.platform.parse().map_err(|e| NodeError::Platform {
        platform: plan.platform.clone(),
        message: format!("{e}"),
    })?;
    let config = RegistriesConfig::load(&paths.registries_config()).map_err(NodeError::RegistriesConfig)?;
    let puller = Puller {
        client: RegistryClient::new(config),
        store,
        options: PullOptions {
            platform,
            ..PullOptions::default()
        },
    };
    // Concurrently: a role pulls half a dozen images, and retries of one do not delay the others.
    let results = futures_util::future::join_all(missing.iter().map(|image| puller.pull(image, progress))).await;
    let failed: Vec<String> = missing
        .iter()
        .zip(results)
        .filter_map(|(image, r)| r.err().map(|e| format!("{image}: {}", crate::base::error::chain(&e))))
        .collect();
    if failed.is_empty() {
        return Ok(());
    }
    Err(NodeError::Pull { failed })
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

/// The supervisor and the CRI (another process with `detach`) read the driver from here.
fn record_cgroup_driver(paths: &Paths, plan: &RolePlan) -> Result<(), NodeError> {
    let path = paths.cgroup_driver_file();
    write_atomic(
        &path,
        plan.config.cgroup_driver.as_str().as_bytes(),
        Durability::Volatile,
        Some(0o644),
    )
    .map_err(|source| NodeError::RecordCgroupDriver { path, source })
}

/// Where the admin kubeconfig is and the command that joins a worker.
fn join_notice(paths: &Paths, plan: &RolePlan) -> Result<Notice, NodeError> {
    let layout = PkiLayout::new(paths.pki());
    let admin_kubeconfig = layout.kubeconfig("admin.conf");
    if !roles::supports_secure_join(&plan.config) {
        return Ok(Notice::Join {
            admin_kubeconfig,
            join_command: None,
        });
    }
    let ca_path = layout.ca_cert(pki::Authority::Kubernetes);
    let ca = std::fs::read_to_string(&ca_path).map_err(|source| NodeError::ReadClusterCa { path: ca_path, source })?;
    let token = pki::read_bootstrap_token(&layout).map_err(NodeError::ReadJoin)?;
    let hash = pki::ca_cert_hash(&ca).map_err(NodeError::ReadJoin)?;
    Ok(Notice::Join {
        admin_kubeconfig,
        join_command: Some(format!(
            "kboot run worker --master {} --token {} --ca-cert-hash {hash}",
            plan.config.master_ip,
            token.expose(),
        )),
    })
}

/// `wait_ready`: the node Ready (as this node's kubelet reports it), then each service that
/// was restarting (`late`) running steadily.
async fn wait_ready(
    paths: &Paths,
    plan: &RolePlan,
    started: SystemTime,
    timeout: Duration,
    late: &[String],
    notice: &mut (dyn FnMut(Notice) + Send),
) -> Result<RunOutcome, NodeError> {
    let layout = PkiLayout::new(paths.pki());
    let creds = match plan.role {
        Role::Master => roles::ready::Credentials::admin(&layout),
        Role::Worker => roles::ready::Credentials::kubelet(&layout, &KubeDirs::default()),
    };
    let node = plan.config.ip_address.to_string();
    let waited = roles::ready::wait_node_ready(
        &creds,
        &api_server(plan),
        &node,
        started,
        timeout,
        Duration::from_millis(500),
    )
    .await;
    if let Err(e) = waited {
        return Ok(RunOutcome {
            problems: vec![Problem {
                message: Some(e.to_string()),
                log: LogTail::read(paths, "kubelet"),
            }],
        });
    }
    notice(Notice::Ready { node });
    let still = wait_steadily_running(paths, late, Instant::now() + timeout).await;
    let problems = still
        .iter()
        .map(|name| {
            let v = supervisor::inspect(paths, name);
            Problem {
                message: Some(format!(
                    "{name} is not running steadily: {} ({} restarts)",
                    v.status, v.restarts
                )),
                log: LogTail::read(paths, name),
            }
        })
        .collect();
    Ok(RunOutcome { problems })
}

/// Running for this long without a restart counts as up (flanneld without a pod CIDR runs
/// about a second before it exits).
const STEADY: Duration = Duration::from_secs(5);

/// Waits until each named container has run for [`STEADY`] without restarting, or finished
/// (exited 0 for good); returns the ones that did neither by `deadline`.
async fn wait_steadily_running(paths: &Paths, names: &[String], deadline: Instant) -> Vec<String> {
    let mut since: HashMap<&str, (u32, Instant)> = HashMap::new();
    loop {
        let now = Instant::now();
        let pending: Vec<String> = names
            .iter()
            .filter(|n| {
                let v = supervisor::inspect(paths, n);
                // A job that finished (kube-bootstrap once the apiserver answered): exited 0
                // and not restarting. It never runs again, so waiting for it to run is the
                // whole timeout (the flannel e2e failed so after 5 min of a Ready node).
                if v.status == "exited" && !v.failed() {
                    since.remove(n.as_str());
                    return false;
                }
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
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shim::record::{write_exit, ExitRecord};
    use crate::supervisor::records::{write_desired, DesiredRecord, DesiredState};

    #[test]
    fn a_finished_job_counts_as_up_and_a_failed_one_does_not() {
        let d = tempfile::tempdir().unwrap();
        let paths = Paths::under(d.path());
        for (name, code) in [("job", 0), ("crash", 1)] {
            let mut desired = DesiredRecord {
                service: Default::default(),
                state: DesiredState::Running,
                stopped_by_user: false,
                requested_at_ms: 1,
            };
            desired.service.name = name.into();
            desired.service.image = "img".into();
            write_desired(&paths, &desired).unwrap();
            let exit = ExitRecord {
                exit_code: code,
                started_at_ms: Some(2),
                finished_at_ms: 3,
                ..Default::default()
            };
            write_exit(&paths, name, &exit).unwrap();
        }
        assert_eq!(supervisor::inspect(&paths, "job").status, "exited");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let names = ["job".to_string(), "crash".to_string()];
        let started = Instant::now();
        let still = rt.block_on(wait_steadily_running(&paths, &names, started + Duration::from_secs(1)));
        assert_eq!(still, ["crash"]);
    }
}
