//! The boot service (`kboot service install|uninstall`): a systemd unit that runs a role's
//! supervisor in the foreground at boot, so a node comes back after the host reboots.
//!
//! What the unit does and why:
//! - `ExecStart` is the foreground `kboot run ROLE …` that `kboot plan` shows as `command`
//!   (the supervisor itself, not `--detach`, which would fork a daemon systemd cannot follow).
//! - `KillMode=process`: stopping or restarting the unit signals the supervisor only; the
//!   containers live in their shims (own sessions) and the next supervisor adopts them.
//! - `KillSignal=SIGQUIT`: the supervisor exits and leaves the containers running
//!   ([`crate::supervisor::Shutdown::LeaveRunning`]); SIGTERM would stop them. So
//!   `systemctl restart kboot` after replacing the binary keeps the node's containers.
//! - `Restart=always`: a supervisor that dies is started again and adopts its containers.
//! - `kboot down` on stop only when asked (`--down-on-stop`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::base::error::PathIo;
use crate::roles::config::{Key, Layer, Role};
use crate::state::{paths_from, Paths};

/// Where `install` writes the unit by default (the local administrator's unit directory).
pub const DEFAULT_UNIT_FILE: &str = "/etc/systemd/system/kboot.service";

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Io(#[from] PathIo),
    #[error("run `systemctl {}`", args.join(" "))]
    Systemctl {
        args: Vec<String>,
        #[source]
        source: std::io::Error,
    },
    #[error("`systemctl {}` failed ({status}): {stderr}", args.join(" "))]
    SystemctlFailed {
        args: Vec<String>,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

type Result<T> = std::result::Result<T, ServiceError>;

/// A worker's join parameters that go on its command line (the token does not: it is a
/// secret, and goes to the unit's environment file, 0600).
#[derive(Debug, Default, Clone)]
pub struct JoinArgs {
    pub ca_cert_hash: Option<String>,
    pub ca_cert: Option<PathBuf>,
}

/// The foreground command that runs a role: `EXE [--root …] run ROLE [flags]`. Global
/// directories appear when they are not the defaults; role settings appear when they came
/// from a flag or the environment (the unit runs without the caller's environment; values
/// from `config.toml` are read again at every start, so editing the file takes effect).
pub fn run_command(exe: &Path, paths: &Paths, role: Role, pinned: &Layer, join: &JoinArgs) -> Vec<String> {
    let mut argv = vec![absolute(exe)];
    let defaults = paths_from(None, None, None);
    for (flag, dir, default) in [
        ("--root", paths.root(), defaults.root()),
        ("--state", paths.state(), defaults.state()),
        ("--config", paths.config(), defaults.config()),
    ] {
        if dir != default {
            argv.extend([flag.to_string(), absolute(dir)]);
        }
    }
    argv.extend(["run".to_string(), role.as_str().to_string()]);
    for key in Key::ALL {
        if let Some(value) = pinned.get(&key) {
            argv.extend([key.flag().to_string(), value.clone()]);
        }
    }
    if role == Role::Worker {
        if let Some(hash) = &join.ca_cert_hash {
            argv.extend(["--ca-cert-hash".to_string(), hash.clone()]);
        }
        if let Some(ca) = &join.ca_cert {
            argv.extend(["--ca-cert".to_string(), absolute(ca)]);
        }
    }
    argv
}

/// `EXE [--root …] down`: the same directories as `command`.
pub fn down_command(command: &[String]) -> Vec<String> {
    let run = command.iter().position(|a| a == "run").unwrap_or(command.len());
    let mut argv = command[..run].to_vec();
    argv.push("down".into());
    argv
}

/// A path as the unit must name it: absolute (systemd starts it from `/`).
fn absolute(p: &Path) -> String {
    std::path::absolute(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

/// What goes into the unit.
#[derive(Debug, Clone)]
pub struct UnitSpec {
    pub role: Role,
    /// [`run_command`]'s argv.
    pub command: Vec<String>,
    /// Run `kboot down` when the unit stops (containers stopped and removed, data kept).
    pub down_on_stop: bool,
    /// Secrets the command reads from its environment (`KBOOT_TOKEN`).
    pub environment_file: Option<PathBuf>,
}

/// The unit file's text.
pub fn unit_text(spec: &UnitSpec) -> String {
    let mut u = String::new();
    let line = |u: &mut String, s: &str| {
        u.push_str(s);
        u.push('\n');
    };
    line(
        &mut u,
        &format!(
            "# Written by `kboot service install {}`: the node's supervisor at boot.",
            spec.role.as_str()
        ),
    );
    line(
        &mut u,
        "# Install again to change it; `kboot service uninstall` removes it.",
    );
    line(&mut u, "[Unit]");
    line(
        &mut u,
        &format!("Description=kboot {}: Kubernetes node supervisor", spec.role.as_str()),
    );
    line(&mut u, "Wants=network-online.target");
    // dbus.service as containerd's unit has it: with the systemd cgroup driver every container
    // is created over D-Bus, so the supervisor starts after the bus and, at shutdown, stops
    // before it (in the cgroup v2 guest a restart during shutdown met a bus already gone:
    // ECONNRESET, ECONNREFUSED; base::systemd holds such restarts back now).
    line(&mut u, "After=network-online.target dbus.service");
    line(&mut u, "");
    line(&mut u, "[Service]");
    line(&mut u, "Type=simple");
    if let Some(env) = &spec.environment_file {
        line(
            &mut u,
            &format!("EnvironmentFile={}", exec_quote(&env.display().to_string())),
        );
    }
    line(&mut u, &format!("ExecStart={}", exec_line(&spec.command)));
    if spec.down_on_stop {
        line(&mut u, &format!("ExecStop={}", exec_line(&down_command(&spec.command))));
        // `down` gives each container a 10 s grace period.
        line(&mut u, "TimeoutStopSec=5min");
    }
    line(
        &mut u,
        "# Signal the supervisor only: the containers live on in their shims and the next",
    );
    line(
        &mut u,
        "# supervisor adopts them. SIGQUIT makes it exit leaving them running (SIGTERM stops them).",
    );
    line(&mut u, "KillMode=process");
    line(&mut u, "KillSignal=SIGQUIT");
    line(&mut u, "Restart=always");
    line(&mut u, "RestartSec=5s");
    line(
        &mut u,
        "# Shims and containers are many tasks; kboot manages the cgroups under it.",
    );
    line(&mut u, "TasksMax=infinity");
    line(&mut u, "LimitNOFILE=1048576");
    line(&mut u, "Delegate=yes");
    line(&mut u, "");
    line(&mut u, "[Install]");
    line(&mut u, "WantedBy=multi-user.target");
    u
}

/// A command line in systemd's syntax (systemd.service(5) "Command lines").
fn exec_line(argv: &[String]) -> String {
    argv.iter().map(|a| exec_quote(a)).collect::<Vec<_>>().join(" ")
}

/// One word of an `Exec*=` line: `%` and `$` are systemd's specifier and variable
/// characters (doubled to stand for themselves); words with anything but plain characters
/// are double-quoted with C-style escapes.
fn exec_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+%$".contains(c));
    let mut out = String::new();
    if !plain {
        out.push('"');
    }
    for c in word.chars() {
        match c {
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    if !plain {
        out.push('"');
    }
    out
}

/// The environment file's text: `NAME=VALUE` lines. Values are validated before (a
/// bootstrap token is `[a-z0-9]{6}.[a-z0-9]{16}`), so they need no quoting.
pub fn environment_text(vars: &[(&str, &str)]) -> String {
    vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
}

/// Writes a file atomically (temp, fsync, rename, fsync the directory).
pub fn write_file(path: &Path, text: &str, mode: u32) -> Result<()> {
    use crate::base::fs::{write_atomic, Durability};
    write_atomic(path, text.as_bytes(), Durability::Durable, Some(mode)).map_err(PathIo::at("write", path))?;
    Ok(())
}

/// Removes a file; true when it existed.
pub fn remove_file(path: &Path) -> Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(PathIo::at("remove", path)(source).into()),
    }
}

/// Runs `systemctl ARGS`.
pub fn systemctl(args: &[&str]) -> Result<()> {
    let owned = || args.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let out = Command::new("systemctl")
        .args(args)
        .output()
        .map_err(|source| ServiceError::Systemctl { args: owned(), source })?;
    if out.status.success() {
        return Ok(());
    }
    Err(ServiceError::SystemctlFailed {
        args: owned(),
        status: out.status,
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roles::config::tests::layer;

    #[test]
    fn run_command_names_non_default_dirs_and_pinned_flags_in_key_order() {
        let paths = paths_from(Some("/srv/kboot".into()), None, None);
        let argv = run_command(
            Path::new("/usr/local/bin/kboot"),
            &paths,
            Role::Master,
            &layer(&[(Key::IpAddress, "192.0.2.10"), (Key::K8sVersion, "v1.34.4")]),
            &JoinArgs::default(),
        );
        assert_eq!(
            argv,
            [
                "/usr/local/bin/kboot",
                "--root",
                "/srv/kboot",
                "run",
                "master",
                "--k8s-version",
                "v1.34.4",
                "--ip-address",
                "192.0.2.10"
            ]
        );
        assert_eq!(
            down_command(&argv),
            ["/usr/local/bin/kboot", "--root", "/srv/kboot", "down"]
        );
    }

    #[test]
    fn run_command_of_a_worker_carries_the_ca_hash_but_never_a_token() {
        let argv = run_command(
            Path::new("/usr/local/bin/kboot"),
            &paths_from(None, None, None),
            Role::Worker,
            &layer(&[(Key::MasterIp, "192.0.2.10")]),
            &JoinArgs {
                ca_cert_hash: Some("sha256:ab".into()),
                ca_cert: None,
            },
        );
        assert_eq!(
            argv.join(" "),
            "/usr/local/bin/kboot run worker --master 192.0.2.10 --ca-cert-hash sha256:ab"
        );
    }

    #[test]
    fn exec_quote_keeps_plain_words_and_escapes_what_systemd_would_interpret() {
        assert_eq!(exec_quote("/usr/local/bin/kboot"), "/usr/local/bin/kboot");
        assert_eq!(exec_quote("sha256:ab"), "sha256:ab");
        assert_eq!(exec_quote("100%"), "100%%");
        assert_eq!(exec_quote("$HOME"), "$$HOME");
        assert_eq!(exec_quote("/srv/my dir"), "\"/srv/my dir\"");
        assert_eq!(exec_quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(exec_quote(""), "\"\"");
    }

    #[test]
    fn unit_runs_down_on_stop_only_when_asked() {
        let spec = UnitSpec {
            role: Role::Master,
            command: vec!["/usr/local/bin/kboot".into(), "run".into(), "master".into()],
            down_on_stop: false,
            environment_file: None,
        };
        let text = unit_text(&spec);
        assert!(text.contains("ExecStart=/usr/local/bin/kboot run master\n"), "{text}");
        assert!(!text.contains("ExecStop="), "{text}");
        let text = unit_text(&UnitSpec {
            down_on_stop: true,
            ..spec
        });
        assert!(text.contains("ExecStop=/usr/local/bin/kboot down\n"), "{text}");
    }
}
