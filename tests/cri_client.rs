//! Shared by the CRI tests: a `kboot cri serve` child and a gRPC client on its socket.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kboot_cri::v1::image_service_client::ImageServiceClient;
use kboot_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint};

use crate::common::Dir;

/// A running `kboot cri serve`; stopped with SIGTERM on drop.
pub struct Server {
    child: Child,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Server {
    /// Starts the server on `dir`'s state directory with CNI configurations from
    /// `dir/net.d`; `wrapper` (e.g. `["unshare", "--net"]`) runs it in a namespace.
    pub fn start(dir: &Dir, wrapper: &[&str], cni_bin_dirs: &[&Path]) -> Self {
        let socket = dir.path().join("state/cri.sock");
        let log = dir.path().join("cri-server.log");
        let _ = std::fs::remove_file(&socket);
        let base = dir.kboot();
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(base.get_program());
                c
            }
            None => Command::new(base.get_program()),
        };
        for (k, v) in base.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd.env("KBOOT_LOG", "kboot=debug")
            .args(["cri", "serve", "--cni-conf-dir"])
            .arg(dir.path().join("net.d"));
        for d in cni_bin_dirs {
            cmd.arg("--cni-bin-dir").arg(d);
        }
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open the server log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn kboot cri serve");
        let mut server = Self { child, socket, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !server.socket.exists() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("kboot cri serve exited with {status}:\n{}", server.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "the CRI socket never appeared:\n{}",
                server.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// The server's process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn runtime(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(channel(&self.socket).await)
    }

    pub async fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(channel(&self.socket).await)
    }

    /// SIGTERM and wait: what a supervisor restart does to the server.
    pub fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill with a pid we spawned and have not reaped yet.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.terminate();
    }
}

pub async fn channel(socket: &Path) -> Channel {
    let socket = socket.to_owned();
    Endpoint::from_static("http://kboot.invalid")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let socket = socket.clone();
            async move {
                // The socket file exists between the server's bind(2) and listen(2): a
                // connection in that window is refused (seen once under load), so retry briefly.
                let mut tries = 0;
                let stream = loop {
                    match tokio::net::UnixStream::connect(&socket).await {
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused && tries < 50 => {
                            tries += 1;
                            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        }
                        other => break other?,
                    }
                };
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
        .expect("connect to the CRI socket")
}
