//! Test helpers shared by the join and readiness tests: a master PKI and a loopback TLS
//! server presenting the apiserver's certificate.

use std::net::{Ipv4Addr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::pki::{self, NodeIdentity, PkiLayout};

/// `openssl s_server -WWW` on loopback, serving `dir` over TLS with the apiserver's cert.
pub(crate) struct Server {
    child: Child,
    pub port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn serve(dir: &std::path::Path, layout: &PkiLayout) -> Server {
    // The port is free when it is picked, but a test running beside this one can take it
    // before s_server binds it; s_server then exits at once. So a server that exits is
    // started again on a new port, and one that never accepts fails the test by name.
    for _ in 0..5 {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut child = Command::new("openssl")
            .args(["s_server", "-quiet", "-WWW", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(layout.cert("apiserver"))
            .arg("-key")
            .arg(layout.key("apiserver"))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run openssl s_server (apt install openssl)");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Server { child, port };
            }
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("openssl s_server did not accept on loopback in 5 attempts");
}

pub(crate) fn master(dir: &std::path::Path) -> PkiLayout {
    let layout = PkiLayout::new(dir.join("pki"));
    pki::ensure_master(&layout, &NodeIdentity::new(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST)).unwrap();
    layout
}

/// A single-threaded runtime for async tests.
pub(crate) fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}
