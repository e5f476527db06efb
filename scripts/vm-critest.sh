#!/usr/bin/env bash
# critest (scripts/critest.sh, the same specs and skips as on this host) inside the Debian 12
# guest of scripts/vm.sh: cgroup v2 with systemd as PID 1, so kboot's CRI runs with the systemd
# cgroup driver it detects there. Builds a release kboot and rootfs-tools here, copies them and
# scripts/ into the guest's share, runs critest.sh as root in the guest, powers it off. The
# critest binary and the image layouts come from the host's cache (/var/cache/kboot-build, shared
# read-only): run scripts/critest.sh on the host once first.
#
#   sudo scripts/vm-critest.sh [extra critest flags, e.g. -ginkgo.focus=PodSandbox]
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "vm-critest.sh: run as root" >&2; exit 2; }
export PATH="$PATH:${HOME:-/root}/.cargo/bin"
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
t0=$(date +%s)
cargo build --quiet --release --bin kboot && cargo build --quiet --release -p rootfs-tools
ls -d /var/cache/kboot-build/critest-images/*/ >/dev/null 2>&1 \
  || { echo "vm-critest.sh: no critest image layouts cached: run sudo scripts/critest.sh first" >&2; exit 1; }

scripts/vm.sh start
trap 'scripts/vm.sh stop' EXIT
share=${KBOOT_VM_DIR:-/tmp/kboot-vm}/share
rm -rf "$share/repo" && mkdir -p "$share/bin" "$share/repo"
cp "$TARGET/release/kboot" "$TARGET/release/rootfs-tools" "$share/bin/"
cp -r scripts "$share/repo/"
echo "vm-critest.sh: built and booted in $(( $(date +%s) - t0 )) s"
# critest.sh writes only under OUT (the guest's disk; not under /root, which is 0700: a pod in a
# user namespace must be able to search the path down to its rootfs); the cache is read-only.
scripts/vm.sh exec -t 5400 -- "set -e
stat -fc 'guest cgroup fs: %T' /sys/fs/cgroup; echo \"PID 1: \$(cat /proc/1/comm)\"
mkdir -p /var/tmp/kboot-critest
rc=0
cd /mnt/host/repo && KBOOT=/mnt/host/bin/kboot ROOTFS_TOOLS=/mnt/host/bin/rootfs-tools OUT=/var/tmp/kboot-critest \
  scripts/critest.sh $* || rc=\$?
# The guest's disk goes with it: a failed spec's own lines come back here.
[ \$rc = 0 ] || grep -m3 -A30 '\[FAILED\]' /var/tmp/kboot-critest/critest.log | cut -c1-300 | head -80
exit \$rc"
echo "vm-critest.sh: done in $(( $(date +%s) - t0 )) s wall"
