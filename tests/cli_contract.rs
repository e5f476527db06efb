//! The command line contract: exit codes and errors users see.

use crate::common::Dir;

#[test]
fn cli_unknown_flag_exits_with_usage_code_2() {
    let d = Dir::new();
    let out = d.kboot().arg("--no-such-flag").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn cli_help_lists_the_documented_commands() {
    let d = Dir::new();
    let out = d.kboot().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for cmd in [
        "pull", "images", "rmi", "prune", "load", "save", "unpack", "run", "plan", "ps", "logs", "exec", "stop",
        "start", "rm", "down",
    ] {
        assert!(
            help.contains(&format!("  {cmd} ")),
            "help does not list `{cmd}`:\n{help}"
        );
    }
    assert!(!help.contains("  shim "), "the internal shim command must stay hidden");
}
