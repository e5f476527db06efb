//! `kboot service install|uninstall`, `completions` and `man`, as users run them.
//!
//! Golden file: `tests/golden/service-master.service` (regenerate with
//! `KBOOT_UPDATE_GOLDEN=1 cargo test --test integration service_cli` and review the diff).

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::common::{kboot_bin, run_ok, Dir};

const TOKEN: &str = "abcdef.0123456789abcdef";
const HASH: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// `kboot` on the default directories (as a unit names them), a private config dir, and none
/// of the caller's kube-deploy variables.
fn kb(d: &Dir) -> Command {
    crate::roles_cli::plan_cmd(d)
}

/// The test binary and temp dir replaced by stable names.
fn normalize(d: &Dir, text: &str) -> String {
    text.replace(&kboot_bin().display().to_string(), "/usr/local/bin/kboot")
        .replace(&d.path().display().to_string(), "/TMP")
}

const NODE: [&str; 4] = ["--ip-address", "192.0.2.10", "--arch", "amd64"];

/// The `ExecStart=` line of a unit, split on spaces (the test's words need no quoting).
fn exec_start(unit: &str) -> Vec<String> {
    unit.lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap_or_else(|| panic!("no ExecStart in:\n{unit}"))
        .split(' ')
        .map(String::from)
        .collect()
}

#[test]
fn service_install_print_is_the_golden_unit_running_the_command_plan_shows() {
    let d = Dir::new();
    let out = run_ok(kb(&d).args(["service", "install", "master", "--print"]).args(NODE));
    let unit = String::from_utf8(out.stdout).unwrap();
    assert!(!d.path().join("config/service.env").exists(), "--print writes nothing");
    let plan = run_ok(kb(&d).args(["plan", "master", "--format", "json"]).args(NODE));
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    let command: Vec<String> = serde_json::from_value(plan["command"].clone()).unwrap();
    assert_eq!(exec_start(&unit), command, "the unit runs what `kboot plan` shows");
    assert_eq!(
        command[command.len() - 6..],
        ["run", "master", "--ip-address", "192.0.2.10", "--arch", "amd64"]
    );
    crate::roles_cli::check_golden("service-master.service", &normalize(&d, &unit));
}

#[test]
fn service_install_pins_environment_values_the_unit_would_not_have() {
    let d = Dir::new();
    let out = run_ok(
        kb(&d)
            .env("K8S_VERSION", "v1.34.4")
            .args(["service", "install", "master", "--print", "--down-on-stop"])
            .args(NODE),
    );
    let unit = String::from_utf8(out.stdout).unwrap();
    let argv = exec_start(&unit);
    assert!(
        argv.windows(2).any(|w| w == ["--k8s-version", "v1.34.4"]),
        "K8S_VERSION from the environment is on the command line: {argv:?}"
    );
    let stop = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStop="))
        .expect("--down-on-stop");
    assert!(stop.ends_with(" down"), "{stop}");
}

#[test]
fn service_install_writes_a_unit_systemd_analyze_accepts_and_uninstall_removes_it() {
    let d = Dir::new();
    let unit_file = d.path().join("units/kboot.service");
    let out = run_ok(
        kb(&d)
            .args([
                "service",
                "install",
                "worker",
                "--master",
                "192.0.2.1",
                "--token",
                TOKEN,
                "--ca-cert-hash",
                HASH,
            ])
            .arg("--unit-file")
            .arg(&unit_file)
            .args(NODE),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let unit = std::fs::read_to_string(&unit_file).unwrap();
    assert!(
        stdout.contains(&format!("wrote {}", unit_file.display())) && stdout.contains(&unit),
        "{stdout}"
    );
    // This host has no systemd as PID 1: the unit is written and the boot command named.
    assert!(stdout.contains("systemd is not running"), "{stdout}");
    let env_hint = format!(
        "with the variables of {}",
        d.path().join("config/service.env").display()
    );
    assert!(stdout.contains(&env_hint), "{stdout}");
    assert!(
        !unit.contains(TOKEN) && !stdout.contains(TOKEN),
        "the token stays out of the unit:\n{unit}"
    );
    let env = d.path().join("config/service.env");
    assert_eq!(std::fs::read_to_string(&env).unwrap(), format!("KBOOT_TOKEN={TOKEN}\n"));
    assert_eq!(std::fs::metadata(&env).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(unit.contains(&format!("EnvironmentFile={}\n", env.display())), "{unit}");
    assert!(
        exec_start(&unit).windows(2).any(|w| w == ["--ca-cert-hash", HASH]),
        "{unit}"
    );

    // systemd's own parser, with the unit's binary and target as they are on this host.
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit_file)
        .output()
        .expect("run systemd-analyze (Debian package systemd; scripts/install-deps.sh)");
    let err = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && err.trim().is_empty(),
        "systemd-analyze verify: {}\n{err}",
        verify.status
    );

    let out = run_ok(kb(&d).args(["service", "uninstall", "--unit-file"]).arg(&unit_file));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!unit_file.exists() && !env.exists(), "{stdout}");
    assert!(stdout.contains(&format!("removed {}", unit_file.display())), "{stdout}");
}

#[test]
fn service_install_refuses_a_worker_without_token_and_detach_only_flags() {
    let d = Dir::new();
    for (args, needle) in [
        (
            vec!["worker", "--master", "192.0.2.1", "--ca-cert-hash", HASH],
            "--token",
        ),
        (
            vec!["worker", "--master", "192.0.2.1", "--token", TOKEN],
            "--ca-cert-hash",
        ),
        (vec!["master", "--wait-ready"], "foreground"),
        (vec!["master", "--unit-file", "/tmp/kboot.unit"], ".service"),
    ] {
        let out = kb(&d)
            .args(["service", "install"])
            .args(&args)
            .args(NODE)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    assert!(!d.path().join("config/service.env").exists());
}

#[test]
fn completions_and_man_come_from_the_command_definitions() {
    let d = Dir::new();
    let bash = String::from_utf8(run_ok(d.kboot().args(["completions", "bash"])).stdout).unwrap();
    for word in ["run", "service", "plan", "--down-on-stop", "--k8s-version"] {
        assert!(bash.contains(word), "bash completion lacks {word}");
    }
    for shell in ["zsh", "fish"] {
        let text = String::from_utf8(run_ok(d.kboot().args(["completions", shell])).stdout).unwrap();
        assert!(text.contains("service") && text.contains("install"), "{shell}");
    }
    let out = d.kboot().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));

    let man = run_ok(d.kboot().arg("man")).stdout;
    let text = String::from_utf8_lossy(&man);
    assert!(
        text.starts_with(".ie") || text.starts_with(".TH"),
        "{}",
        &text[..text.len().min(200)]
    );
    assert!(text.contains(".TH kboot 1"), "{}", &text[..text.len().min(400)]);
    // groff checks the roff (every warning on) and renders it.
    let mut groff = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run groff (Debian package groff-base)");
    std::io::Write::write_all(&mut groff.stdin.take().unwrap(), &man).unwrap();
    let rendered = groff.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&rendered.stderr);
    assert!(rendered.status.success() && err.is_empty(), "groff: {err}");
    let page = String::from_utf8_lossy(&rendered.stdout);
    for sub in ["run", "plan", "service", "completions", "man", "down"] {
        assert!(
            page.contains(&format!("kboot-{sub}(1)")),
            "the man page lists no `{sub}`:\n{page}"
        );
    }

    let dir = d.path().join("man1");
    run_ok(d.kboot().arg("man").arg("--dir").arg(&dir));
    for page in ["kboot.1", "kboot-run.1", "kboot-service.1", "kboot-service-install.1"] {
        assert!(dir.join(page).is_file(), "{page}");
    }
}
