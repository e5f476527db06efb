//! `GetContainerEvents`: the server-streaming call behind the kubelet's evented PLEG
//! (`EventedPLEG` feature gate). Each event names a container (or a sandbox: kboot has no
//! pause container, so a sandbox's own events carry its ID as the container ID, as
//! containerd's do), its kind (CREATED, STARTED, STOPPED, DELETED), when it happened, and
//! what the kubelet would otherwise relist for: the sandbox's status and the statuses of
//! every container in it.
//!
//! The state changes the CRI makes itself (run/stop/remove a sandbox, create/start/remove
//! a container) call [`Cri::emit`] under the server lock, so events leave in the order the
//! changes were made. A container that exits on its own is noticed through a pidfd on its
//! shim (the shim records the exit, then ends), which also covers shims adopted after a
//! restart of the server. Events are built only while someone subscribes.

use std::sync::Arc;

use kboot_cri::v1::{ContainerEventResponse, ContainerEventType};
use tokio::sync::{broadcast, mpsc};

use super::container::Phase;
use super::{now_nanos, Cri, Inner};
use crate::shim::record::ShimRecord;

/// Events a subscriber may fall behind by before it loses the oldest (a warning is logged;
/// containerd drops events past its 1000-event queue the same way). 110 pods starting at
/// once make about 450 events.
const BACKLOG: usize = 2048;

pub(crate) type EventStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<ContainerEventResponse, tonic::Status>> + Send>>;

/// The broadcast of events, and the channel the exit watchers report container IDs on.
#[derive(Debug)]
pub(crate) struct Events {
    tx: broadcast::Sender<ContainerEventResponse>,
    exits: mpsc::UnboundedSender<String>,
    exited: std::sync::Mutex<Option<mpsc::UnboundedReceiver<String>>>,
}

impl Events {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(BACKLOG);
        let (exits, exited) = mpsc::unbounded_channel();
        Self {
            tx,
            exits,
            exited: std::sync::Mutex::new(Some(exited)),
        }
    }

    /// A new subscriber's stream: every event from now on, until the client goes away.
    pub fn subscribe(&self) -> EventStream {
        let rx = self.tx.subscribe();
        Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(ev) => return Some((Ok(ev), rx)),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "a GetContainerEvents client fell behind; events dropped");
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        }))
    }

    /// Watches a running container's shim and reports the container once the shim has
    /// ended (its exit record is written by then).
    pub fn watch_exit(&self, id: String, shim: ShimRecord) {
        let exits = self.exits.clone();
        tokio::spawn(async move {
            shim.ended().await;
            let _ = exits.send(id);
        });
    }
}

impl Cri {
    /// Sends one event, if anyone listens. Called with the server lock held, right after the
    /// change it reports, so the statuses in it are the ones the change produced.
    pub(super) fn emit(&self, inner: &Inner, container_id: &str, sandbox_id: &str, kind: ContainerEventType) {
        if self.events.tx.receiver_count() == 0 {
            return;
        }
        let paths = &self.config.paths;
        let event = ContainerEventResponse {
            container_id: container_id.to_owned(),
            container_event_type: kind as i32,
            created_at: now_nanos(),
            pod_sandbox_status: inner.sandboxes.get(sandbox_id).map(|s| s.status()),
            containers_statuses: inner
                .containers
                .values()
                .filter(|c| c.record.sandbox_id == sandbox_id)
                .map(|c| Self::full_status(inner, paths, c))
                .collect(),
        };
        tracing::debug!(container = %container_id, sandbox = %sandbox_id, ?kind, "container event");
        let _ = self.events.tx.send(event);
    }

    /// Starts the task that turns ended shims into STOPPED events, and watches the shims
    /// of the containers already running (adopted after a restart). Once per server.
    pub(super) async fn start_events(self: &Arc<Self>) {
        let Some(mut exited) = self.events.exited.lock().ok().and_then(|mut rx| rx.take()) else {
            return;
        };
        let cri = Arc::clone(self);
        tokio::spawn(async move {
            while let Some(id) = exited.recv().await {
                let mut inner = cri.inner.lock().await;
                // Its shim has ended: read the exit once, so lists and statuses say Exited.
                inner.refresh_phase(&cri.config.paths, &id);
                if let Some(c) = inner.containers.get(&id) {
                    let sandbox = c.record.sandbox_id.clone();
                    cri.emit(&inner, &id, &sandbox, ContainerEventType::ContainerStoppedEvent);
                }
            }
        });
        let inner = self.inner.lock().await;
        for c in inner.containers.values() {
            if let Phase::Running(rec) = inner.phase(&self.config.paths, c) {
                self.events.watch_exit(c.id.clone(), rec);
            }
        }
    }

    /// What a new `GetContainerEvents` call streams.
    pub(super) fn subscribe_events(&self) -> EventStream {
        self.events.subscribe()
    }
}
