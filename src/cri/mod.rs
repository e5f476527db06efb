//! The kubelet's CRI: `runtime.v1` (and `runtime.v1alpha2`) RuntimeService and ImageService on a Unix socket
//! (`Paths::cri_socket()`, `/run/kboot/cri.sock`), on top of kboot's store, unpacker and shims.
//!
//! Pod sandboxes need no pause image: a hostNetwork sandbox is a record; any other gets a
//! pinned network namespace ([`netns`]) attached through CNI ([`cni`]).

mod cni;
mod container;
mod error;
mod events;
pub mod holder;
mod image;
mod log;
mod netns;
mod record;
mod resources;
mod runtime;
mod sandbox;
mod spec;
mod stats;
mod streaming;
mod userns;
mod v1alpha2;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use kboot_cri::v1::image_service_server::ImageServiceServer;
use kboot_cri::v1::runtime_service_server::RuntimeServiceServer;
use kboot_cri::v1::{ContainerEventType, PodSandboxConfig};
use kboot_cri::v1alpha2::image_service_server::ImageServiceServer as AlphaImageServer;
use kboot_cri::v1alpha2::runtime_service_server::RuntimeServiceServer as AlphaRuntimeServer;
use tokio::net::UnixListener;
use tokio::sync::Mutex;
use tokio_stream::wrappers::UnixListenerStream;

pub use cni::CniDirs;
pub use error::CriError;
use error::Result;
use record::CriContainer;
use sandbox::{Sandbox, SandboxState};

use crate::state::Paths;

/// How long open connections may finish their calls once the server is told to stop.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// What the CRI server needs: where kboot keeps things and where CNI lives.
#[derive(Debug, Clone)]
pub struct CriConfig {
    pub paths: Paths,
    pub cni: CniDirs,
}

impl CriConfig {
    /// The standard CNI locations (`/etc/cni/net.d`, `/opt/cni/bin`, `/usr/lib/cni`).
    pub fn new(paths: Paths) -> Self {
        Self {
            paths,
            cni: CniDirs::default(),
        }
    }
}

/// Serves the CRI on `paths.cri_socket()` until `shutdown` completes.
pub async fn serve(paths: Paths, shutdown: impl Future<Output = ()> + Send) -> Result<(), CriError> {
    serve_with(CriConfig::new(paths), shutdown).await
}

/// [`serve`] with explicit CNI directories.
pub async fn serve_with(config: CriConfig, shutdown: impl Future<Output = ()> + Send) -> Result<(), CriError> {
    let socket = config.paths.cri_socket();
    let bind_err = |source| CriError::BindSocket {
        path: socket.clone(),
        source,
    };
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(bind_err)?;
    }
    // A socket file left by a previous run refuses the bind; nobody can be listening on it
    // unless another kboot runs with the same state dir, which the supervisor lock prevents.
    match std::fs::remove_file(&socket) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(bind_err(e)),
        _ => {}
    }
    let listener = UnixListener::bind(&socket).map_err(bind_err)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
    }
    let cri = Arc::new(Cri::open(config));
    cri.check_networks().await;
    cri.start_events().await;
    let streams = streaming::Streams::start(cri.clone()).await;
    // Counted before logging: an `.await` inside the macro's arguments would make this future !Send.
    let sandboxes = cri.inner.lock().await.sandboxes.len();
    tracing::info!(socket = %socket.display(), sandboxes, "serving the CRI");
    // After `shutdown`, open connections get a short grace period: the kubelet keeps its
    // connection open forever, and waiting for it would never let the server stop.
    let stopping = Arc::new(tokio::sync::Notify::new());
    let notify = stopping.clone();
    let server = tonic::transport::Server::builder()
        .add_service(RuntimeServiceServer::new(runtime::Runtime {
            cri: cri.clone(),
            streams: streams.clone(),
        }))
        .add_service(ImageServiceServer::new(image::Images(cri.clone())))
        // The pre-1.20 package, for kubelets up to v1.18 (hyperkube images).
        .add_service(AlphaRuntimeServer::new(v1alpha2::RuntimeAlpha(runtime::Runtime {
            cri: cri.clone(),
            streams: streams.clone(),
        })))
        .add_service(AlphaImageServer::new(v1alpha2::ImagesAlpha(image::Images(cri))))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async move {
            shutdown.await;
            notify.notify_one();
        });
    tokio::select! {
        served = server => served.map_err(|source| CriError::Serve { path: socket.clone(), source })?,
        () = async {
            stopping.notified().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => tracing::info!("CRI connections still open after the grace period; closing them"),
    }
    streams.stop();
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

/// Stops and removes every pod sandbox this root's CRI created, with its containers, pod
/// network and rootfs views. `kboot down` calls it after the supervisor (and so the CRI server
/// and the kubelet) has stopped, so the kubelet's pods do not outlive the node. Returns the
/// sandbox IDs removed.
pub async fn remove_all(paths: Paths) -> Result<Vec<String>, CriError> {
    let cri = Cri::open(CriConfig::new(paths));
    let ids: Vec<String> = cri.inner.lock().await.sandboxes.keys().cloned().collect();
    for id in &ids {
        cri.remove_sandbox(id).await?;
    }
    Ok(ids)
}

/// Shared server state behind one lock, held only to read or change that state: never
/// across a process, a mount, a namespace, a CNI call or an fsync. The slow part of every
/// change (RunPodSandbox, CreateContainer, StartContainer, StopPodSandbox,
/// RemovePodSandbox, RemoveContainer) runs outside it, after reserving what it works on, and
/// its file and mount work runs on tokio's blocking threads ([`blocking`]): with the lock
/// or an executor thread held across that work, 110 pods were made and removed one after
/// the other and every status and list call of the kubelet waited behind them
/// (bench/README.md, Density). Reads answer from memory.
#[derive(Debug)]
pub(crate) struct Cri {
    config: CriConfig,
    inner: Mutex<Inner>,
    /// The kubelet's pod CIDR (UpdateRuntimeConfig), apart from `inner` so `Status` never
    /// waits for it.
    pod_cidr: std::sync::Mutex<String>,
    /// One lock per sandbox for StopPodSandbox and RemovePodSandbox, which the kubelet may
    /// send twice at once (a retry after its deadline) and which must not interleave.
    sandbox_ops: std::sync::Mutex<std::collections::HashMap<String, Arc<Mutex<()>>>>,
    /// Permits for the heavy part of a change (see [`Cri::heavy`]).
    heavy: tokio::sync::Semaphore,
    events: events::Events,
}

/// How many heavy changes (a sandbox's namespaces and CNI ADD, a container's rootfs and
/// bundle, a shim's start, a stop's unmounts and CNI DEL, a removal's deletes) run at once,
/// per core. They are CPU and kernel-lock bound: 110 at once on 2 cores (the kubelet sends
/// a whole Deployment at once) left the server's own threads one runnable thread among
/// hundreds, and a status call took seconds (the 110-pod test); a few per core keep the
/// cores busy and the reads answered.
const HEAVY_PER_CORE: usize = 2;

#[derive(Debug, Default)]
struct Inner {
    sandboxes: BTreeMap<String, Sandbox>,
    containers: BTreeMap<String, CriContainer>,
    /// Each container's phase as last read from its shim's records: at load, after its
    /// start, after it stopped, and when its shim ends (the exit watcher of [`events`]), so
    /// lists and status calls read no file. A container missing here is read from disk.
    phases: BTreeMap<String, container::Phase>,
    /// Sandboxes (by metadata) and containers (by sandbox and metadata) being made outside
    /// the lock: a second request for the same one is refused as a duplicate meanwhile.
    making: std::collections::BTreeSet<String>,
    /// Containers whose StartContainer is under way (outside the lock).
    starting: std::collections::BTreeSet<String>,
    /// Containers whose RemoveContainer is under way (outside the lock).
    removing: std::collections::BTreeSet<String>,
}

impl Inner {
    /// The container's phase from memory (from its shim's records when not known yet).
    fn phase(&self, paths: &Paths, c: &CriContainer) -> container::Phase {
        self.phases.get(&c.id).cloned().unwrap_or_else(|| c.phase(paths))
    }

    /// Reads the container's phase from its shim's records again and keeps it.
    fn refresh_phase(&mut self, paths: &Paths, id: &str) {
        if let Some(c) = self.containers.get(id) {
            let phase = c.phase(paths);
            self.phases.insert(id.to_owned(), phase);
        }
    }
}

/// Runs file, mount and namespace work on tokio's blocking threads: on one of the few
/// executor threads it would stall every other call of the server meanwhile.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| CriError::Unavailable(format!("a blocking task of the CRI server failed: {e}")))?
}

pub(crate) fn now_nanos() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

impl Cri {
    /// Re-adopts the sandboxes on disk. A sandbox whose namespace vanished (reboot) is
    /// reported NotReady, so the kubelet recreates it instead of trusting it.
    fn open(config: CriConfig) -> Self {
        let mut sandboxes = BTreeMap::new();
        for mut s in Sandbox::load_all(&config.paths) {
            if s.state.ready && !s.namespaces_intact() {
                tracing::warn!(sandbox = %s.id, "a pod namespace is gone; marking the sandbox not ready");
                s.state.ready = false;
            }
            sandboxes.insert(s.id.clone(), s);
        }
        // Containers keep running under their shims while the server is down; their
        // records and the shims' records are all there is to re-adopt.
        let containers: BTreeMap<String, CriContainer> = CriContainer::load_all(&config.paths)
            .into_iter()
            .filter(|c| sandboxes.contains_key(&c.record.sandbox_id))
            .map(|c| (c.id.clone(), c))
            .collect();
        let phases = containers
            .values()
            .map(|c| (c.id.clone(), c.phase(&config.paths)))
            .collect();
        Self {
            config,
            inner: Mutex::new(Inner {
                sandboxes,
                containers,
                phases,
                ..Default::default()
            }),
            pod_cidr: Default::default(),
            sandbox_ops: Default::default(),
            heavy: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, |n| n.get()).max(2) * HEAVY_PER_CORE,
            ),
            events: events::Events::new(),
        }
    }

    /// CNI CHECK of every ready pod network after a restart; one that fails is reported
    /// NotReady so the kubelet replaces the pod rather than trusting a broken network.
    async fn check_networks(&self) {
        let mut inner = self.inner.lock().await;
        let Ok(net) = self.config.cni.network(&self.pod_cidr()) else {
            return;
        };
        for s in inner.sandboxes.values_mut().filter(|s| s.state.ready) {
            let (Some(path), Some(result)) = (s.state.netns.clone(), s.state.cni_result.clone()) else {
                continue;
            };
            if let Err(err) = self.config.cni.check(&net, &Self::attachment(s, &path), &result).await {
                tracing::warn!(sandbox = %s.id, error = %err, "CNI CHECK failed; marking the sandbox not ready");
                s.state.ready = false;
                if let Err(err) = s.save(&self.config.paths) {
                    tracing::warn!(sandbox = %s.id, error = %err, "could not record the sandbox state");
                }
            }
        }
    }

    /// `(ready, reason, message)` for the NetworkReady condition.
    async fn network_ready(&self) -> (bool, String) {
        let cni = self.config.cni.clone();
        let cidr = self.pod_cidr();
        // The configuration directory is read per call: a CNI plugin may install it any time.
        match blocking(move || Ok(cni.network(&cidr).map(drop)?)).await {
            Ok(()) => (true, String::new()),
            Err(e) => (false, crate::base::error::chain(&e)),
        }
    }

    fn pod_cidr(&self) -> String {
        self.pod_cidr.lock().map(|c| c.clone()).unwrap_or_default()
    }

    fn set_pod_cidr(&self, cidr: String) {
        tracing::info!(pod_cidr = %cidr, "pod CIDR updated");
        if let Ok(mut c) = self.pod_cidr.lock() {
            *c = cidr;
        }
    }

    /// A permit for one heavy change (see [`HEAVY_PER_CORE`]); never taken twice by one call.
    async fn heavy(&self) -> tokio::sync::SemaphorePermit<'_> {
        // The semaphore is never closed.
        self.heavy
            .acquire()
            .await
            .expect("the CRI's work semaphore is never closed")
    }

    /// The lock of one sandbox's stop and removal (see `Cri::sandbox_ops`).
    async fn sandbox_op(&self, id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self
            .sandbox_ops
            .lock()
            .map(|mut ops| Arc::clone(ops.entry(id.to_owned()).or_default()))
            .unwrap_or_default();
        lock.lock_owned().await
    }

    /// Bytes and inodes under the content store, for `ImageFsInfo`.
    fn fs_usage(paths: &Paths) -> kboot_cri::v1::FilesystemUsage {
        fn walk(dir: &std::path::Path, bytes: &mut u64, inodes: &mut u64) {
            let Ok(entries) = std::fs::read_dir(dir) else { return };
            for e in entries.flatten() {
                let Ok(meta) = e.metadata() else { continue };
                *inodes += 1;
                if meta.is_dir() {
                    walk(&e.path(), bytes, inodes);
                } else {
                    *bytes += meta.len();
                }
            }
        }
        let content = paths.content();
        let (mut bytes, mut inodes) = (0, 0);
        walk(&content, &mut bytes, &mut inodes);
        kboot_cri::v1::FilesystemUsage {
            timestamp: now_nanos(),
            fs_id: Some(kboot_cri::v1::FilesystemIdentifier {
                mountpoint: content.display().to_string(),
            }),
            used_bytes: Some(kboot_cri::v1::UInt64Value { value: bytes }),
            inodes_used: Some(kboot_cri::v1::UInt64Value { value: inodes }),
        }
    }

    fn attachment<'a>(s: &'a Sandbox, netns: &'a std::path::Path) -> cni::Attachment<'a> {
        let m = s.config.metadata.as_ref();
        cni::Attachment {
            sandbox_id: &s.id,
            netns,
            pod_name: m.map_or("", |m| &m.name),
            pod_namespace: m.map_or("", |m| &m.namespace),
            pod_uid: m.map_or("", |m| &m.uid),
            port_mappings: s
                .config
                .port_mappings
                .iter()
                .filter(|p| p.host_port > 0)
                .map(|p| {
                    let protocol = match kboot_cri::v1::Protocol::try_from(p.protocol) {
                        Ok(kboot_cri::v1::Protocol::Udp) => "udp",
                        Ok(kboot_cri::v1::Protocol::Sctp) => "sctp",
                        _ => "tcp",
                    };
                    serde_json::json!({"hostPort": p.host_port, "containerPort": p.container_port,
                                       "protocol": protocol, "hostIP": p.host_ip})
                })
                .collect(),
        }
    }

    async fn run_sandbox(&self, config: PodSandboxConfig, runtime_handler: String) -> Result<String> {
        let Some(meta) = config.metadata.clone() else {
            return Err(CriError::InvalidArgument(
                "PodSandboxConfig.metadata is required".into(),
            ));
        };
        if meta.name.is_empty() || meta.namespace.is_empty() {
            return Err(CriError::InvalidArgument(
                "sandbox metadata needs a name and a namespace".into(),
            ));
        }
        if !runtime_handler.is_empty() {
            return Err(CriError::InvalidArgument(format!(
                "runtime handler {runtime_handler:?} is unknown (kboot has only the default handler \"\")"
            )));
        }
        // The lock is held only to check for a duplicate and to record the result: the CNI
        // ADD, the namespaces and the fsynced records in between take 50–500 ms per pod, and
        // with the lock held 110 pods started at once were made one after the other, every
        // status and list call of the kubelet waiting behind them (bench/README.md, Density).
        let key = format!(
            "sandbox\0{}\0{}\0{}\0{}",
            meta.namespace, meta.name, meta.uid, meta.attempt
        );
        {
            let mut inner = self.inner.lock().await;
            if let Some(dup) = inner
                .sandboxes
                .values()
                .find(|s| s.config.metadata.as_ref() == Some(&meta))
            {
                return Err(CriError::AlreadyExists(format!(
                    "sandbox {}/{} (uid {}, attempt {}) already exists as {}",
                    meta.namespace, meta.name, meta.uid, meta.attempt, dup.id
                )));
            }
            if !inner.making.insert(key.clone()) {
                return Err(CriError::AlreadyExists(format!(
                    "sandbox {}/{} (uid {}, attempt {}) is being created",
                    meta.namespace, meta.name, meta.uid, meta.attempt
                )));
            }
        }
        let pod_cidr = self.pod_cidr();
        let permit = self.heavy().await;
        let made = self.make_sandbox(config, runtime_handler, &pod_cidr).await;
        drop(permit);
        let mut inner = self.inner.lock().await;
        inner.making.remove(&key);
        let s = made?;
        let id = s.id.clone();
        tracing::info!(sandbox = %id, pod = %meta.name, namespace = %meta.namespace, host_network = s.host_network(), ips = ?s.state.ips, "sandbox ready");
        inner.sandboxes.insert(id.clone(), s);
        // No pause container: the sandbox's own events carry its ID, as containerd's do.
        self.emit(&inner, &id, &id, ContainerEventType::ContainerCreatedEvent);
        self.emit(&inner, &id, &id, ContainerEventType::ContainerStartedEvent);
        Ok(id)
    }

    /// The sandbox's network, namespaces and records; on failure nothing is left.
    async fn make_sandbox(&self, config: PodSandboxConfig, runtime_handler: String, pod_cidr: &str) -> Result<Sandbox> {
        let ranges = userns::of_options(
            config
                .linux
                .as_ref()
                .and_then(|l| l.security_context.as_ref())
                .and_then(|s| s.namespace_options.as_ref()),
        )?;
        if ranges.is_some() {
            userns::require(&self.config.paths).await?;
        }
        let id = sandbox::new_id()?;
        let mut s = Sandbox {
            id: id.clone(),
            config,
            state: SandboxState {
                created_at: now_nanos(),
                ready: true,
                runtime_handler,
                ..Default::default()
            },
        };
        if let Some(r) = &ranges {
            // First: it makes the pod's network namespace inside the user namespace.
            s.state.pid_holder = Some(holder::start(&self.config.paths, &id, Some(r)).await?);
        }
        if !s.host_network() {
            let net = self.config.cni.network(pod_cidr)?;
            let path = self.config.paths.netns(&id);
            // A new network namespace takes the kernel 10–100 ms under load (`unshare`).
            let holder_net = s.state.pid_holder.filter(|h| h.userns).map(|h| h.namespace("net"));
            let (pin_id, pin_path) = (id.clone(), path.clone());
            let pinned = blocking(move || match holder_net {
                Some(ns) => netns::pin_existing(&pin_id, &pin_path, &ns),
                None => netns::pin(&pin_id, &pin_path),
            })
            .await;
            if let Err(e) = pinned {
                Self::release_namespaces(&mut s);
                return Err(e);
            }
            match self.config.cni.add(&net, &Self::attachment(&s, &path)).await {
                Ok(result) => {
                    s.state.ips = cni::result_ips(&result);
                    s.state.cni_result = Some(result);
                }
                Err(e) => {
                    // Undo the half-made attachment; the kubelet retries with a new sandbox.
                    let _ = self.config.cni.del(&net, &Self::attachment(&s, &path), None).await;
                    let _ = netns::unpin(&id, &path);
                    Self::release_namespaces(&mut s);
                    return Err(e.into());
                }
            }
            s.state.netns = Some(path);
        }
        let held = match self.hold_namespaces(&mut s).await {
            Ok(()) => {
                let (saved, paths) = (s.clone(), self.config.paths.clone());
                blocking(move || saved.save(&paths).and_then(|()| saved.write_resolv_conf(&paths))).await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = held {
            Self::release_namespaces(&mut s);
            let _ = self.teardown_network(&mut s, pod_cidr).await;
            return Err(e);
        }
        Ok(s)
    }

    /// The pod's shared IPC namespace (pinned, unless hostIPC) and PID namespace (a holder
    /// process, only when the pod asks for one: the kubelet's `shareProcessNamespace`).
    async fn hold_namespaces(&self, s: &mut Sandbox) -> Result<()> {
        use kboot_cri::v1::NamespaceMode;
        let ns = s.namespace_options();
        if ns.ipc != NamespaceMode::Node as i32 {
            let path = self.config.paths.ipcns(&s.id);
            let holder_ipc = s.state.pid_holder.filter(|h| h.userns).map(|h| h.namespace("ipc"));
            let (id, pin_path) = (s.id.clone(), path.clone());
            blocking(move || match holder_ipc {
                Some(ns) => netns::pin_existing(&id, &pin_path, &ns),
                None => netns::pin_ipc(&id, &pin_path),
            })
            .await?;
            s.state.ipcns = Some(path);
        }
        if ns.pid == NamespaceMode::Pod as i32 && s.state.pid_holder.is_none() {
            s.state.pid_holder = Some(holder::start(&self.config.paths, &s.id, None).await?);
        }
        Ok(())
    }

    /// Ends the PID namespace holder and unpins the IPC namespace (both idempotent).
    fn release_namespaces(s: &mut Sandbox) {
        if let Some(h) = s.state.pid_holder.take() {
            h.stop();
        }
        if let Some(path) = s.state.ipcns.take() {
            if let Err(e) = netns::unpin(&s.id, &path) {
                tracing::warn!(sandbox = %s.id, error = %e, "could not release the IPC namespace");
            }
        }
    }

    /// CNI DEL and unpin. DEL failures are returned: the kubelet retries StopPodSandbox.
    async fn teardown_network(&self, s: &mut Sandbox, pod_cidr: &str) -> Result<()> {
        let Some(path) = s.state.netns.clone() else {
            return Ok(());
        };
        if let Ok(net) = self.config.cni.network(pod_cidr) {
            self.config
                .cni
                .del(&net, &Self::attachment(s, &path), s.state.cni_result.as_ref())
                .await?;
        }
        netns::unpin(&s.id, &path)?;
        s.state.netns = None;
        s.state.cni_result = None;
        Ok(())
    }

    fn resolve_sandbox<'a>(inner: &'a Inner, id: &str) -> Result<&'a Sandbox> {
        if id.is_empty() {
            return Err(CriError::InvalidArgument("pod_sandbox_id is required".into()));
        }
        let mut found = inner
            .sandboxes
            .range(id.to_owned()..)
            .take_while(|(k, _)| k.starts_with(id));
        match (found.next(), found.next()) {
            (Some((_, s)), None) => Ok(s),
            (Some(_), Some(_)) => Err(CriError::InvalidArgument(format!(
                "sandbox ID prefix {id:?} is ambiguous"
            ))),
            _ => Err(CriError::NotFound {
                kind: "pod sandbox",
                id: id.to_owned(),
            }),
        }
    }

    /// The full ID of sandbox `id` (a prefix), or None when there is none.
    async fn sandbox_id(&self, id: &str) -> Result<Option<String>> {
        match Self::resolve_sandbox(&*self.inner.lock().await, id) {
            Ok(s) => Ok(Some(s.id.clone())),
            Err(CriError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn stop_sandbox(&self, id: &str) -> Result<()> {
        // Idempotent: the kubelet stops sandboxes that may already be gone.
        let Some(full) = self.sandbox_id(id).await? else {
            return Ok(());
        };
        let _op = self.sandbox_op(&full).await;
        self.stop_sandbox_held(&full).await
    }

    /// StopPodSandbox with the sandbox's own lock held: its containers are killed, their
    /// rootfs views unmounted (as containerd unmounts a task's rootfs when it ends: nothing
    /// of a stopped pod stays mounted until the kubelet's garbage collection removes it),
    /// its network torn down and its namespaces released. The server lock is held only to
    /// read and record: the sandbox is marked not ready first, so no container is created
    /// in it meanwhile.
    async fn stop_sandbox_held(&self, full: &str) -> Result<()> {
        let paths = self.config.paths.clone();
        let (mut s, members) = {
            let mut inner = self.inner.lock().await;
            let Some(s) = inner.sandboxes.get_mut(full) else {
                return Ok(());
            };
            s.state.ready = false;
            let s = s.clone();
            let members: Vec<CriContainer> = inner
                .containers
                .values()
                .filter(|c| c.record.sandbox_id == full)
                .cloned()
                .collect();
            (s, members)
        };
        // The permit covers the kills too: each shim's teardown (the container's cgroups, its
        // records) is work on this host's cores like a start.
        let _permit = self.heavy().await;
        for c in &members {
            container::stop(&paths, c, std::time::Duration::ZERO).await?;
        }
        {
            let mut inner = self.inner.lock().await;
            for c in &members {
                inner.refresh_phase(&paths, &c.id);
            }
        }
        let view_paths = paths.clone();
        blocking(move || {
            for c in &members {
                container::release_rootfs(&view_paths, c)?;
            }
            Ok(())
        })
        .await?;
        self.teardown_network(&mut s, &self.pod_cidr()).await?;
        let saved = blocking(move || {
            Self::release_namespaces(&mut s);
            s.save(&paths).map(|()| s)
        })
        .await?;
        tracing::info!(sandbox = %full, "sandbox stopped");
        let mut inner = self.inner.lock().await;
        if inner.sandboxes.contains_key(full) {
            inner.sandboxes.insert(full.to_owned(), saved);
            self.emit(&inner, full, full, ContainerEventType::ContainerStoppedEvent);
        }
        Ok(())
    }

    async fn remove_sandbox(&self, id: &str) -> Result<()> {
        // Removing a sandbox that is already gone succeeds (the kubelet retries).
        let Some(full) = self.sandbox_id(id).await? else {
            return Ok(());
        };
        let _op = self.sandbox_op(&full).await;
        let ready = match self.inner.lock().await.sandboxes.get(&full) {
            Some(s) => s.state.ready || s.holds_namespaces(),
            None => return Ok(()),
        };
        if ready {
            self.stop_sandbox_held(&full).await?;
        }
        // Not ready now: no container can be added to it any more.
        let members: Vec<CriContainer> = self
            .inner
            .lock()
            .await
            .containers
            .values()
            .filter(|c| c.record.sandbox_id == full)
            .cloned()
            .collect();
        for c in &members {
            container::stop(&self.config.paths, c, std::time::Duration::ZERO).await?;
        }
        let (paths, gone, sandbox) = (self.config.paths.clone(), members.clone(), full.clone());
        let permit = self.heavy().await;
        blocking(move || {
            for c in &gone {
                container::remove(&paths, c)?;
            }
            Sandbox::delete(&paths, &sandbox)
        })
        .await?;
        drop(permit);
        let mut inner = self.inner.lock().await;
        for c in &members {
            inner.containers.remove(&c.id);
            inner.phases.remove(&c.id);
            self.emit(&inner, &c.id, &full, ContainerEventType::ContainerDeletedEvent);
        }
        // With the sandbox's last status, so the kubelet can tell which pod went away.
        self.emit(&inner, &full, &full, ContainerEventType::ContainerDeletedEvent);
        inner.sandboxes.remove(&full);
        drop(inner);
        if let Ok(mut ops) = self.sandbox_ops.lock() {
            ops.remove(&full);
        }
        tracing::info!(sandbox = %full, "sandbox removed");
        Ok(())
    }
}

impl Cri {
    /// A container's status as `ContainerStatus` and the events report it: the shim's
    /// records, and the resources in force.
    fn full_status(inner: &Inner, paths: &Paths, c: &CriContainer) -> kboot_cri::v1::ContainerStatus {
        let mut status = c.status(inner.phase(paths, c));
        status.resources = c.config.linux.as_ref().map(|l| kboot_cri::v1::ContainerResources {
            linux: l.resources.clone(),
            windows: None,
        });
        status
    }

    fn resolve_container<'a>(inner: &'a Inner, id: &str) -> Result<&'a CriContainer> {
        if id.is_empty() {
            return Err(CriError::InvalidArgument("container_id is required".into()));
        }
        let mut found = inner
            .containers
            .range(id.to_owned()..)
            .take_while(|(k, _)| k.starts_with(id));
        match (found.next(), found.next()) {
            (Some((_, c)), None) => Ok(c),
            (Some(_), Some(_)) => Err(CriError::InvalidArgument(format!(
                "container ID prefix {id:?} is ambiguous"
            ))),
            _ => Err(CriError::NotFound {
                kind: "container",
                id: id.to_owned(),
            }),
        }
    }

    async fn create_container(&self, sandbox_id: &str, config: kboot_cri::v1::ContainerConfig) -> Result<String> {
        let Some(meta) = config.metadata.clone() else {
            return Err(CriError::InvalidArgument("ContainerConfig.metadata is required".into()));
        };
        if meta.name.is_empty() {
            return Err(CriError::InvalidArgument("container metadata needs a name".into()));
        }
        let wanted = config.image.as_ref().map(|i| i.image.clone()).unwrap_or_default();
        if wanted.is_empty() {
            return Err(CriError::InvalidArgument("ContainerConfig.image is required".into()));
        }
        // As for sandboxes: the lock covers the checks and the result, not the rootfs view,
        // the bundle and the fsynced records in between.
        let (pod, key) = {
            let mut inner = self.inner.lock().await;
            let pod = Self::resolve_sandbox(&inner, sandbox_id)?.clone();
            if !pod.state.ready {
                return Err(CriError::FailedPrecondition(format!(
                    "pod sandbox {} is not ready",
                    pod.id
                )));
            }
            if let Some(dup) = inner
                .containers
                .values()
                .find(|c| c.record.sandbox_id == pod.id && c.config.metadata.as_ref() == Some(&meta))
            {
                return Err(CriError::AlreadyExists(format!(
                    "container {} (attempt {}) already exists in sandbox {} as {}",
                    meta.name, meta.attempt, pod.id, dup.id
                )));
            }
            let key = format!("container\0{}\0{}\0{}", pod.id, meta.name, meta.attempt);
            if !inner.making.insert(key.clone()) {
                return Err(CriError::AlreadyExists(format!(
                    "container {} (attempt {}) is being created in sandbox {}",
                    meta.name, meta.attempt, pod.id
                )));
            }
            (pod, key)
        };
        let paths = self.config.paths.clone();
        let pod_id = pod.id.clone();
        let permit = self.heavy().await;
        let made = blocking(move || Self::make_container(&paths, &pod, &wanted, config)).await;
        drop(permit);
        let mut inner = self.inner.lock().await;
        inner.making.remove(&key);
        let c = made?;
        let id = c.id.clone();
        // The pod was stopped or removed meanwhile: nothing may be left in it.
        if !inner.sandboxes.get(&pod_id).is_some_and(|s| s.state.ready) {
            drop(inner);
            let (paths, half) = (self.config.paths.clone(), c);
            let _ = blocking(move || container::remove(&paths, &half)).await;
            return Err(CriError::FailedPrecondition(format!(
                "pod sandbox {} stopped while container {} was being created",
                pod_id, meta.name
            )));
        }
        tracing::info!(container = %id, sandbox = %pod_id, name = %meta.name, image = %c.record.image, "container created");
        inner.containers.insert(id.clone(), c);
        inner.phases.insert(id.clone(), container::Phase::Created);
        self.emit(&inner, &id, &pod_id, ContainerEventType::ContainerCreatedEvent);
        Ok(id)
    }

    /// The container's rootfs view, bundle and records; on failure nothing is left.
    fn make_container(
        paths: &Paths,
        pod: &Sandbox,
        wanted: &str,
        config: kboot_cri::v1::ContainerConfig,
    ) -> Result<CriContainer> {
        let store = crate::store::Store::open(paths)?;
        let image = image::resolve_for_container(&store, wanted)?;
        let id = sandbox::new_id()?;
        let c = match container::prepare(paths, &id, image, &config, pod) {
            Ok(record) => CriContainer {
                id: id.clone(),
                config,
                record,
            },
            Err(e) => {
                let half = CriContainer {
                    id: id.clone(),
                    config,
                    record: Default::default(),
                };
                let _ = container::remove(paths, &half);
                return Err(e);
            }
        };
        if let Err(e) = c.save(paths) {
            let _ = container::remove(paths, &c);
            return Err(e);
        }
        Ok(c)
    }

    async fn start_container(&self, id: &str) -> Result<()> {
        // The shim's start (10–30 ms, far more under load) runs outside the lock; `starting`
        // keeps a second StartContainer or a RemoveContainer of the same container out.
        let c = {
            let mut inner = self.inner.lock().await;
            let c = Self::resolve_container(&inner, id)?.clone();
            if inner.starting.contains(&c.id)
                || inner.removing.contains(&c.id)
                || !matches!(inner.phase(&self.config.paths, &c), record::Phase::Created)
            {
                return Err(CriError::FailedPrecondition(format!(
                    "container {} was already started",
                    c.id
                )));
            }
            inner.starting.insert(c.id.clone());
            c
        };
        let permit = self.heavy().await;
        let started = container::start(&self.config.paths, &c).await;
        drop(permit);
        let mut inner = self.inner.lock().await;
        inner.starting.remove(&c.id);
        inner.refresh_phase(&self.config.paths, &c.id);
        started?;
        tracing::info!(container = %c.id, "container started");
        self.emit(
            &inner,
            &c.id,
            &c.record.sandbox_id,
            ContainerEventType::ContainerStartedEvent,
        );
        match inner.phase(&self.config.paths, &c) {
            container::Phase::Running(shim) => self.events.watch_exit(c.id.clone(), shim),
            // Ended already (a short command): its STOPPED follows its STARTED now.
            container::Phase::Exited(_) => self.emit(
                &inner,
                &c.id,
                &c.record.sandbox_id,
                ContainerEventType::ContainerStoppedEvent,
            ),
            container::Phase::Created => {}
        }
        Ok(())
    }

    async fn stop_container(&self, id: &str, timeout: std::time::Duration) -> Result<()> {
        let c = match Self::resolve_container(&*self.inner.lock().await, id) {
            Ok(c) => c.clone(),
            // Idempotent, as StopPodSandbox.
            Err(CriError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let stopped = container::stop(&self.config.paths, &c, timeout).await;
        // Exited from now on, without waiting for the exit watcher to tell.
        self.inner.lock().await.refresh_phase(&self.config.paths, &c.id);
        stopped
    }

    async fn remove_container(&self, id: &str) -> Result<()> {
        // The lock reserves the removal; the kill, the unmounts and the deletes run outside it.
        let c = {
            let mut inner = self.inner.lock().await;
            let c = match Self::resolve_container(&inner, id) {
                Ok(c) => c.clone(),
                Err(CriError::NotFound { .. }) => return Ok(()),
                Err(e) => return Err(e),
            };
            if inner.starting.contains(&c.id) {
                return Err(CriError::FailedPrecondition(format!(
                    "container {} is being started; remove it once StartContainer has returned",
                    c.id
                )));
            }
            if !inner.removing.insert(c.id.clone()) {
                return Err(CriError::FailedPrecondition(format!(
                    "container {} is being removed already",
                    c.id
                )));
            }
            c
        };
        let paths = self.config.paths.clone();
        let removed = match container::stop(&paths, &c, std::time::Duration::ZERO).await {
            Ok(()) => {
                let gone = c.clone();
                let _permit = self.heavy().await;
                blocking(move || container::remove(&paths, &gone)).await
            }
            Err(e) => Err(e),
        };
        let mut inner = self.inner.lock().await;
        inner.removing.remove(&c.id);
        removed?;
        inner.containers.remove(&c.id);
        inner.phases.remove(&c.id);
        self.emit(
            &inner,
            &c.id,
            &c.record.sandbox_id,
            ContainerEventType::ContainerDeletedEvent,
        );
        tracing::info!(container = %c.id, "container removed");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kboot_cri::v1::{
        LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption, PodSandboxMetadata,
    };

    pub(crate) fn host_network_config(name: &str) -> PodSandboxConfig {
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: format!("uid-{name}"),
                namespace: "default".into(),
                attempt: 0,
            }),
            labels: [("app".to_string(), name.to_string())].into(),
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    // Host namespaces only: nothing to pin, no holder to start (and no root
                    // needed), so these tests exercise the records alone.
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Node as i32,
                        pid: NamespaceMode::Node as i32,
                        ipc: NamespaceMode::Node as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn cri(dir: &std::path::Path) -> Cri {
        let mut config = CriConfig::new(Paths::under(dir));
        config.cni = CniDirs {
            conf_dir: dir.join("net.d"),
            bin_dirs: vec![],
        };
        Cri::open(config)
    }

    #[tokio::test]
    async fn host_network_sandbox_survives_a_restart_and_removal_is_idempotent() {
        let tmp = tempfile::tempdir().unwrap();
        let id = cri(tmp.path())
            .run_sandbox(host_network_config("etcd"), String::new())
            .await
            .unwrap();
        let again = cri(tmp.path());
        let s = Cri::resolve_sandbox(&*again.inner.lock().await, &id[..12])
            .unwrap()
            .clone();
        assert!(s.state.ready);
        assert_eq!(s.config, host_network_config("etcd"));
        again.stop_sandbox(&id).await.unwrap();
        again.stop_sandbox(&id).await.unwrap();
        again.remove_sandbox(&id).await.unwrap();
        again.remove_sandbox(&id).await.unwrap();
        assert!(cri(tmp.path()).inner.lock().await.sandboxes.is_empty());
    }

    #[tokio::test]
    async fn sandbox_bad_requests_change_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let c = cri(tmp.path());
        let no_meta = PodSandboxConfig {
            metadata: None,
            ..host_network_config("x")
        };
        assert!(matches!(
            c.run_sandbox(no_meta, String::new()).await,
            Err(CriError::InvalidArgument(_))
        ));
        assert!(matches!(
            c.run_sandbox(host_network_config("x"), "kata".into()).await,
            Err(CriError::InvalidArgument(_))
        ));
        // A pod network without any CNI configuration: refused, nothing recorded.
        let pod_net = PodSandboxConfig {
            linux: None,
            ..host_network_config("y")
        };
        assert!(matches!(
            c.run_sandbox(pod_net, String::new()).await,
            Err(CriError::Cni(cni::CniError::NoConfig { .. }))
        ));
        c.stop_sandbox("nope").await.unwrap();
        c.run_sandbox(host_network_config("x"), String::new()).await.unwrap();
        assert!(matches!(
            c.run_sandbox(host_network_config("x"), String::new()).await,
            Err(CriError::AlreadyExists(_))
        ));
        assert_eq!(c.inner.lock().await.sandboxes.len(), 1);
        assert_eq!(Sandbox::load_all(&c.config.paths).len(), 1);
    }
}
