#!/usr/bin/env bash
# CRI benchmark (issue 6): kboot's CRI (`kboot cri serve` + one `kboot shim` per container)
# against Debian's containerd 1.6 (CRI plugin, runc through containerd-shim-runc-v2), both
# driven by the same crictl in the same run:
#   1. `crictl runp` + `create` + `start` of a busybox container in a hostNetwork pod (no
#      CNI on either side), alternating kboot and containerd, RUNS times each (default 20);
#      median and ratio;
#   2. with the RUNS pods of each still running: the RSS (and PSS) of kboot's server and
#      shims against containerd and its shims (pause processes listed apart).
#
#   sudo bench/cri.sh            # RUNS=20
#
# Everything lives in a temp dir and a network namespace of the script's own: a Debian
# docker-registry on 127.0.0.1:5000 there serves busybox (Debian's busybox-static) and a
# pause image, both built with rootfs-tools under their upstream names; containerd pulls
# them through its registry mirror configuration (config_path, hosts.toml with the
# registry as a plain-HTTP mirror), kboot through registries.toml. containerd gets its own
# root, state, socket and config; nothing under /etc, /var/lib or /run/containerd is used.
#
# The pause image: containerd needs one; kboot does not (it holds pod namespaces itself).
# Its binary is a 20-line static C program built here with gcc -static: pause(2) in a loop,
# exit on SIGINT/SIGTERM, reap children, like upstream's pause.c.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib/containerd.sh
[ "$(id -u)" -eq 0 ] || { echo "bench/cri.sh: run as root" >&2; exit 2; }
RUNS=${RUNS:-20}
CRI_TOOLS=${CRI_TOOLS:-/var/cache/kboot-build/cri-tools-v1.34.0/bin}
[ -x "$CRI_TOOLS/crictl" ] || scripts/build-k8s.sh --only cri-tools
command -v containerd >/dev/null || { echo "bench/cri.sh: containerd missing (scripts/install-deps.sh)" >&2; exit 2; }

# KBOOT=path/to/kboot runs another build (e.g. a debug one, to try the script quickly).
if [ -z "${KBOOT:-}" ]; then
  cargo build --release --quiet --bin kboot
  KBOOT=${CARGO_TARGET_DIR:-$PWD/target}/release/kboot
fi
cargo build --quiet -p rootfs-tools
ROOTFS_TOOLS=${CARGO_TARGET_DIR:-$PWD/target}/debug/rootfs-tools
W=$(mktemp -d /tmp/kboot-bench-cri.XXXXXX)
CTRD=$W/containerd
KB_SOCK=$W/kboot/state/cri.sock
CD_SOCK=$CTRD/containerd.sock

holder_pid="" registry_pid="" kboot_pid="" containerd_pid=""
in_ns() { nsenter --net=/proc/$holder_pid/ns/net -- "$@"; }
# crictl warns on every call that it has no config file and that pods have no cgroup_parent.
crictl_quiet() { "$CRI_TOOLS/crictl" --timeout 60s "$@" 2> >(grep -v 'level=warning' >&2); }
crictl_kb() { crictl_quiet -r "unix://$KB_SOCK" -i "unix://$KB_SOCK" "$@"; }
crictl_cd() { crictl_quiet -r "unix://$CD_SOCK" -i "unix://$CD_SOCK" "$@"; }
cleanup() {
  set +e
  [ -S "$KB_SOCK" ] && crictl_kb rmp --force --all >/dev/null 2>&1
  [ -S "$CD_SOCK" ] && crictl_cd rmp --force --all >/dev/null 2>&1
  for p in $kboot_pid $containerd_pid $registry_pid; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
  # Shims whose pods could not be removed: only those of this run (their command line
  # names this run's directory), by PID.
  for p in $(pgrep -f -- "$W/" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
  [ -n "$holder_pid" ] && kill "$holder_pid" 2>/dev/null
  # containerd's snapshot and shm mounts, kboot's rootfs views.
  grep -o " $W/[^ ]*" /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
  rm -rf "$W"
}
trap cleanup EXIT

unshare --net -- sleep infinity &
holder_pid=$!
for _ in $(seq 100); do
  [ "$(readlink /proc/$holder_pid/ns/net)" != "$(readlink /proc/self/ns/net)" ] && break
  sleep 0.05
done
[ "$(readlink /proc/$holder_pid/ns/net)" != "$(readlink /proc/self/ns/net)" ] || { echo "bench/cri.sh: no private netns" >&2; exit 1; }
in_ns ip link set lo up

# --- registry and images --------------------------------------------------------------------
mkdir -p "$W/registry"
cat >"$W/registry/config.yml" <<YAML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $W/registry/data}}
http: {addr: 127.0.0.1:5000}
YAML
nsenter --net=/proc/$holder_pid/ns/net -- /usr/bin/docker-registry serve "$W/registry/config.yml" >"$W/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 50); do in_ns bash -c 'exec 3<>/dev/tcp/127.0.0.1/5000' 2>/dev/null && break; sleep 0.1; done

bb=$W/busybox-rootfs
mkdir -p "$bb/bin" "$bb/etc" "$bb/tmp"
cp /bin/busybox "$bb/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$bb/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$bb/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$bb/etc/group"
chmod 1777 "$bb/tmp"
in_ns "$ROOTFS_TOOLS" build --add "$bb:/" --cmd sh --env PATH=/bin -o "$W/layouts/busybox" \
  --push 127.0.0.1:5000/library/busybox:1.36 --insecure >/dev/null

cat >"$W/pause.c" <<'C'
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
static void quit(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, NULL, WNOHANG) > 0) {} }
int main(void) {
  struct sigaction q = {.sa_handler = quit}, r = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP};
  sigaction(SIGINT, &q, NULL);
  sigaction(SIGTERM, &q, NULL);
  sigaction(SIGCHLD, &r, NULL);
  for (;;) pause();
}
C
mkdir -p "$W/pause-rootfs"
gcc -static -Os -s -o "$W/pause-rootfs/pause" "$W/pause.c"
in_ns "$ROOTFS_TOOLS" build --add "$W/pause-rootfs/pause:/pause:755" --entrypoint /pause -o "$W/layouts/pause" \
  --push 127.0.0.1:5000/pause:3.9 --insecure >/dev/null

# --- containerd: own root, state, socket, config; registry mirror through hosts.toml ------
mkdir -p "$CTRD"/{root,state,opt,net.d}
containerd_config "$CTRD" "$CD_SOCK" 127.0.0.1:5000 registry.k8s.io/pause:3.9 "$CTRD/net.d"
nsenter --net=/proc/$holder_pid/ns/net -- containerd --config "$CTRD/config.toml" >"$W/containerd.log" 2>&1 &
containerd_pid=$!

# --- kboot ------------------------------------------------------------------------------------
mkdir -p "$W/kboot/config" "$W/kboot/net.d"
cat >"$W/kboot/config/registries.toml" <<TOML
[[registry]]
host = "docker.io"
mirrors = ["127.0.0.1:5000"]
fallback = false

[[registry]]
host = "127.0.0.1:5000"
insecure = true
TOML
KBOOT_LOG=warn nsenter --net=/proc/$holder_pid/ns/net -- "$KBOOT" --root "$W/kboot/root" --state "$W/kboot/state" \
  --config "$W/kboot/config" cri serve --cni-conf-dir "$W/kboot/net.d" >"$W/kboot.log" 2>&1 &
kboot_pid=$!

for _ in $(seq 100); do [ -S "$KB_SOCK" ] && [ -S "$CD_SOCK" ] && break; sleep 0.1; done
[ -S "$KB_SOCK" ] || { echo "bench/cri.sh: kboot's socket never appeared"; cat "$W/kboot.log"; exit 1; }
[ -S "$CD_SOCK" ] || { echo "bench/cri.sh: containerd's socket never appeared"; tail -20 "$W/containerd.log"; exit 1; }

# Images first: the benchmark times pods and containers, not pulls.
crictl_kb pull docker.io/library/busybox:1.36 >/dev/null
crictl_cd pull docker.io/library/busybox:1.36 >/dev/null
crictl_cd pull registry.k8s.io/pause:3.9 >/dev/null

pod_json() { # NAME → file
  cat >"$W/$1-pod.json" <<JSON
{"metadata": {"name": "$1", "namespace": "bench", "uid": "$1-uid", "attempt": 0},
 "log_directory": "$W/logs/$1",
 "linux": {"security_context": {"namespace_options": {"network": 2}}}}
JSON
  echo "$W/$1-pod.json"
}
cat >"$W/ctr.json" <<JSON
{"metadata": {"name": "sleeper"}, "image": {"image": "docker.io/library/busybox:1.36"},
 "command": ["sleep", "3600"], "log_path": "sleeper/0.log"}
JSON

now_ns() { date +%s%N; }
one() { # crictl function, pod name, label → appends microseconds to $W/<label>.times (and per step)
  local c=$1 name=$2 label=$3 pod ctr t0 t1 t2 t3 podf
  podf=$(pod_json "$name")
  t0=$(now_ns)
  pod=$($c runp "$podf")
  t1=$(now_ns)
  ctr=$($c create "$pod" "$W/ctr.json" "$podf")
  t2=$(now_ns)
  $c start "$ctr" >/dev/null
  t3=$(now_ns)
  echo $(((t3 - t0) / 1000)) >>"$W/$label.times"
  echo $(((t1 - t0) / 1000)) >>"$W/$label.runp"
  echo $(((t2 - t1) / 1000)) >>"$W/$label.create"
  echo $(((t3 - t2) / 1000)) >>"$W/$label.start"
}

echo "== crictl runp + create + start (hostNetwork pod, busybox sleep), $RUNS runs each, alternating; load: $(cut -d' ' -f1-3 /proc/loadavg)"
for i in $(seq "$RUNS"); do
  if ((i % 2)); then
    one crictl_kb "kb$i" kboot
    one crictl_cd "cd$i" containerd
  else
    one crictl_cd "cd$i" containerd
    one crictl_kb "kb$i" kboot
  fi
done
median() { sort -n "$1" | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
ms() { awk -v us="$1" 'BEGIN {printf "%.1f ms", us/1000}'; }
kb_med=$(median "$W/kboot.times")
cd_med=$(median "$W/containerd.times")
for e in kboot containerd; do
  printf '%-12s median %s  (min %s, max %s); steps: runp %s, create %s, start %s\n' "$e" \
    "$(ms "$(median "$W/$e.times")")" "$(ms "$(sort -n "$W/$e.times" | head -1)")" "$(ms "$(sort -n "$W/$e.times" | tail -1)")" \
    "$(ms "$(median "$W/$e.runp")")" "$(ms "$(median "$W/$e.create")")" "$(ms "$(median "$W/$e.start")")"
done
awk -v a="$kb_med" -v b="$cd_med" 'BEGIN {printf "ratio kboot/containerd: %.2f\n", a/b}'
# The floor both pay: three crictl processes (Go start-up, connection, one trivial call).
for i in $(seq "$RUNS"); do
  for e in kb cd; do
    t0=$(now_ns)
    "crictl_$e" version >/dev/null
    echo $((($(now_ns) - t0) / 1000)) >>"$W/$e.version"
  done
done
floor=$(awk -v a="$(median "$W/kb.version")" -v b="$(median "$W/cd.version")" 'BEGIN {print int(3 * (a + b) / 2)}')
awk -v a="$kb_med" -v b="$cd_med" -v f="$floor" 'BEGIN {printf "crictl floor (3 x crictl version, median): %.1f ms; ratio above the floor: %.2f\n", f/1000, (a-f)/(b-f)}'

running_kb=$(crictl_kb ps -q --state running | wc -l)
running_cd=$(crictl_cd ps -q --state running | wc -l)
echo "== memory with $running_kb (kboot) and $running_cd (containerd) running pods"
# RSS counts the shared pages of one binary once per process; PSS splits them.
mem() { # label, PIDs…  → "label  n  rss  pss"
  local label=$1 rss=0 pss=0 n=0 p r s
  shift
  for p in "$@"; do
    r=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
    s=$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0)
    rss=$((rss + ${r:-0})) pss=$((pss + ${s:-0})) n=$((n + 1))
  done
  awk -v l="$label" -v n="$n" -v r="$rss" -v s="$pss" \
    'BEGIN {printf "%-34s %4d procs  RSS %7.1f MB  PSS %7.1f MB\n", l, n, r/1024, s/1024}'
  echo "$rss" >"$W/rss.$label"
}
kb_shims=$(pgrep -f -- "$W/kboot/config shim --id" | tr '\n' ' ')
cd_shims=$(pgrep -f -- "containerd-shim-runc-v2 .*-address $CD_SOCK" | tr '\n' ' ')
pauses=$(for s in $cd_shims; do pgrep -P "$s" -x pause; done | tr '\n' ' ')
# shellcheck disable=SC2086
{
  mem kboot-cri-serve $kboot_pid
  mem kboot-shims $kb_shims
  mem kboot-total $kboot_pid $kb_shims
  mem containerd $containerd_pid
  mem containerd-shims $cd_shims
  mem containerd-total $containerd_pid $cd_shims
  mem containerd-pause-processes $pauses
}
awk -v a="$(cat "$W/rss.kboot-total")" -v b="$(cat "$W/rss.containerd-total")" \
  'BEGIN {printf "RSS ratio kboot/containerd (server + shims, pause not counted): %.2f\n", a/b}'
echo "versions: $("$KBOOT" --version 2>/dev/null | head -1); containerd $(containerd --version | awk '{print $3}'); runc $(runc --version | awk 'NR==1 {print $3}')"
