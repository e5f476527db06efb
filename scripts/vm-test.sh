#!/usr/bin/env bash
# kboot's privileged tests inside the Debian 12 guest of scripts/vm.sh: cgroup v2 (unified)
# with systemd as PID 1, the layout this host cannot have. Builds kboot and the privileged
# test binary here, copies them in (debug info stripped: 9p moves ~17 MB/s under TCG), runs
# the tests as root in the guest, then powers it off.
#
#   sudo scripts/vm-test.sh [test filter...]     # default: the container and CRI tests
#
# The filter is libtest's (substrings of test names). The guest has no runc, so the two
# differential probes against runc are skipped by default (named in the output).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "vm-test.sh: run as root" >&2; exit 2; }
export PATH="$PATH:${HOME:-/root}/.cargo/bin"
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
filters=("$@")
((${#filters[@]})) || filters=(containers_privileged cri)
skips=(--skip containers_probe_matches_runc)

t0=$(date +%s)
cargo build --quiet --bin kboot
exe=$(cargo test --no-run --test privileged --message-format=json 2>/dev/null \
  | grep '"kind":\["test"\]' | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
[ -x "$exe" ] || { echo "vm-test.sh: no privileged test binary from cargo" >&2; exit 1; }
# The test binary runs kboot from the path cargo compiled into it.
kboot_path=$(grep -m1 -ao '/[[:alnum:]_./-]*/debug/kboot' "$exe" | head -1)
echo "vm-test.sh: built in $(( $(date +%s) - t0 )) s; kboot at $kboot_path in the guest"

scripts/vm.sh start
trap 'scripts/vm.sh stop' EXIT
share=${KBOOT_VM_DIR:-/tmp/kboot-vm}/share
mkdir -p "$share/bin"
objcopy --strip-debug "$TARGET/debug/kboot" "$share/bin/kboot"
objcopy --strip-debug "$exe" "$share/bin/privileged"
scripts/vm.sh exec -- "mkdir -p $(dirname "$kboot_path") && cp /mnt/host/bin/kboot $kboot_path && cp /mnt/host/bin/privileged /root/privileged
stat -fc 'guest cgroup fs: %T' /sys/fs/cgroup; echo \"PID 1: \$(cat /proc/1/comm)\"; uname -r"
scripts/vm.sh exec -t 3600 -- "cd /root && KBOOT_PRIVILEGED_TESTS=1 ./privileged --ignored --test-threads 1 ${skips[*]} ${filters[*]}"
