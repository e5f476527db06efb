#!/usr/bin/env bash
# An idle supervisor's cost: 8 sleeping containers and one with a 2 s healthcheck under a
# detached `kboot run -d`, then the supervisor's own CPU time over IDLE_S seconds (and its
# children's: the healthcheck's `kboot exec`), and its system calls over 10 s (strace -c -f,
# probes included). With KBOOT_BASE=<binary>, the same for that kboot first, so a change to
# the supervisor loop is measured against the binary before it in the same run.
#
#   sudo bench/supervisor-idle.sh                              # this tree's release build
#   sudo KBOOT_BASE=/path/to/old/kboot bench/supervisor-idle.sh  # before and after
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "bench/supervisor-idle.sh: run as root" >&2; exit 2; }
IDLE_S=${IDLE_S:-60}
cargo build --release --quiet --bin kboot
KBOOT=${CARGO_TARGET_DIR:-$PWD/target}/release/kboot
W=$(mktemp -d /tmp/kboot-bench-idle-XXXXXX)
trap 'rm -rf "$W"' EXIT

mkdir -p "$W/rootfs/bin"
cp "$(command -v busybox)" "$W/rootfs/bin/busybox"
ln -s busybox "$W/rootfs/bin/sh"; ln -s busybox "$W/rootfs/bin/sleep"
{
  echo "services:"
  for i in 1 2 3 4 5 6 7 8; do
    printf '  s%s:\n    image: dir:%s\n    command: /bin/sleep 100000\n    restart: always\n' "$i" "$W/rootfs"
  done
  printf '  hc:\n    image: dir:%s\n    command: /bin/sleep 100000\n    healthcheck:\n      test: ["CMD", "/bin/sh", "-c", "true"]\n      interval: 2s\n' "$W/rootfs"
} > "$W/plan.yaml"

ticks() { awk -v f="$2" '{print $f + $(f+1)}' "/proc/$1/stat"; }
measure() { # BIN TAG
  local bin=$1 tag=$2 r=$W/$2
  local k=("$bin" --root "$r/root" --state "$r/state" --config "$r/config")
  "${k[@]}" run -d -f "$W/plan.yaml" > "$r.run" 2>&1 || { cat "$r.run"; return 1; }
  sleep 10
  local pid t0 c0 t1 c1
  pid=$(cat "$r/state/supervisor.pid")
  t0=$(ticks "$pid" 14); c0=$(ticks "$pid" 16)
  sleep "$IDLE_S"
  t1=$(ticks "$pid" 14); c1=$(ticks "$pid" 16)
  timeout -s INT 10 strace -c -f -p "$pid" -o "$r.strace" >/dev/null 2>&1 || true
  local hz; hz=$(getconf CLK_TCK)
  printf '| %s | %s | %s | %s |\n' "$tag" \
    "$(awk -v t=$((t1 - t0)) -v hz="$hz" -v s="$IDLE_S" 'BEGIN{printf "%.2f %%", 100*t/hz/s}')" \
    "$(awk -v t=$((c1 - c0)) -v hz="$hz" -v s="$IDLE_S" 'BEGIN{printf "%.2f %%", 100*t/hz/s}')" \
    "$(awk '/total/{print $4}' "$r.strace")"
  "${k[@]}" down --purge > /dev/null 2>&1 || "${k[@]}" down > /dev/null 2>&1 || true
}

echo "| kboot | supervisor CPU (of a core), ${IDLE_S} s idle | its children (healthcheck execs) | syscalls in 10 s, children included |"
echo "|---|---|---|---|"
[ -n "${KBOOT_BASE:-}" ] && measure "$KBOOT_BASE" base
measure "$KBOOT" this
