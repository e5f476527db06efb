#!/usr/bin/env bash
# Containers benchmark (issue 4): create → start → exit → delete of /bin/true,
# kboot against runc (and crun) on the very same bundle, plus the memory of a
# supervisor with 10 containers and of one shim.
#
#   sudo bench/containers.sh            # RUNS=50 by default
#   sudo BENCH_CRUN_HUGETLB=1 bench/containers.sh   # also crun, see below
#
# crun 1.8.1 refuses hybrid cgroup hosts whose cgroup2 has controllers
# (machine-notes §6). With BENCH_CRUN_HUGETLB=1 the script mounts the hugetlb
# v1 hierarchy for the crun runs only and unmounts it afterwards (a host-wide
# change for those seconds; kboot and runc work either way).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "bench/containers.sh: run as root" >&2; exit 2; }
RUNS=${RUNS:-50}

cargo build --release --quiet
KBOOT=${CARGO_TARGET_DIR:-$PWD/target}/release/kboot
W=$(mktemp -d /tmp/kboot-bench-XXXXXX)
export KBOOT_ROOT=$W/root KBOOT_STATE=$W/state KBOOT_CONFIG=$W/config
cleanup() {
  "$KBOOT" down >/dev/null 2>&1 || true
  [ -n "${HUGETLB_MNT:-}" ] && umount "$HUGETLB_MNT" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT

# A busybox rootfs (Debian busybox-static) with /bin/true.
R=$W/rootfs
mkdir -p "$R/bin" "$R/etc" "$R/proc" "$R/sys" "$R/dev" "$R/tmp"
cp /bin/busybox "$R/bin/"
for a in true sh sleep; do ln -s /bin/busybox "$R/bin/$a"; done
echo 'root:x:0:0::/root:/bin/sh' >"$R/etc/passwd"

cat >"$W/true.yml" <<EOF
services:
  t:
    image: dir:$R
    command: ["/bin/true"]
EOF
# kboot writes the bundle every engine runs: private namespaces, default caps.
"$KBOOT" run -f "$W/true.yml" >/dev/null
B=$KBOOT_ROOT/containers/t/bundle

echo "== create→start→exit→delete of /bin/true, $RUNS runs (hyperfine -N); load: $(cut -d' ' -f1-3 /proc/loadavg)"
engines=(
  -n "kboot shim" "$KBOOT shim --id t --bundle $B"
  -n "kboot run -f" "$KBOOT run -f $W/true.yml"
  -n "runc run" "runc --root $W/runc run -b $B t-runc"
)
hyperfine -N --warmup 3 --runs "$RUNS" --export-json "$W/h.json" "${engines[@]}" >/dev/null

crun_json=""
if [ "${BENCH_CRUN_HUGETLB:-0}" = 1 ]; then
  # cgroupfs files report size 0: test the content, not the size.
  if grep -q . /sys/fs/cgroup/unified/cgroup.controllers; then
    HUGETLB_MNT=$W/cg-hugetlb
    mkdir -p "$HUGETLB_MNT"
    mount -t cgroup -o hugetlb cgroup "$HUGETLB_MNT"
    for _ in $(seq 50); do grep -q . /sys/fs/cgroup/unified/cgroup.controllers || break; sleep 0.1; done
  fi
  if crun --root "$W/crun" run -b "$B" t-crun-probe >/dev/null; then
    hyperfine -N --warmup 3 --runs "$RUNS" --export-json "$W/c.json" -n "crun run" "crun --root $W/crun run -b $B t-crun" >/dev/null
    crun_json=$W/c.json
  fi
  [ -n "${HUGETLB_MNT:-}" ] && umount "$HUGETLB_MNT" && HUGETLB_MNT=""
else
  crun --root "$W/crun" run -b "$B" t-crun-probe >/dev/null 2>&1 && echo "(crun works here: rerun with BENCH_CRUN_HUGETLB=1 to time it)" \
    || echo "crun: refuses this hybrid host (set BENCH_CRUN_HUGETLB=1 to time it with the hugetlb workaround)"
fi

python3 - "$W/h.json" $crun_json <<'EOF'
import json, sys
rows = []
for f in sys.argv[1:]:
    rows += json.load(open(f))["results"]
runc = next(r["median"] for r in rows if r["command"] == "runc run")
print(f"{'engine':14} {'median ms':>10} {'mean ms':>9} {'stddev':>7} {'vs runc':>8} {'CPU ms (user+sys)':>18}")
for r in rows:
    cpu = (r['user'] + r['system']) * 1000
    print(f"{r['command']:14} {r['median']*1000:10.2f} {r['mean']*1000:9.2f} {r['stddev']*1000:7.2f} {r['median']/runc:7.2f}x {cpu:18.2f}")
EOF

echo
echo "== memory"
/usr/bin/time -v "$KBOOT" run -f "$W/true.yml" 2>"$W/time.txt" >/dev/null
echo "kboot run -f (foreground supervisor, one /bin/true): peak RSS $(awk -F': ' '/Maximum resident/ {print $2}' "$W/time.txt") kB"
/usr/bin/time -v "$KBOOT" shim --id t --bundle "$B" 2>"$W/time2.txt" >/dev/null
echo "kboot shim (one /bin/true): peak RSS $(awk -F': ' '/Maximum resident/ {print $2}' "$W/time2.txt") kB"
/usr/bin/time -v runc --root "$W/runc" run -b "$B" t-runc 2>"$W/time3.txt" >/dev/null
echo "runc run (one /bin/true): peak RSS $(awk -F': ' '/Maximum resident/ {print $2}' "$W/time3.txt") kB"

{
  echo "services:"
  for i in $(seq 1 10); do
    printf '  s%s:\n    image: dir:%s\n    command: sleep 3600\n    restart: always\n' "$i" "$R"
  done
} >"$W/ten.yml"
"$KBOOT" run -d -f "$W/ten.yml" >/dev/null
sleep 1
sup=$(cat "$KBOOT_STATE/supervisor.pid")
shim_pid() { python3 -c "import json,sys; print(json.load(open('$KBOOT_STATE/shims/$1.json'))['shim_pid'])"; }
shim=$(shim_pid s1)
# RssFile is the kboot binary's pages in the page cache, shared by every shim and the
# supervisor; Pss divides each shared page among the processes mapping it (the real cost).
mem() {
  awk '/^(VmRSS|RssAnon|RssFile):/ {printf "%s %s kB  ", $1, $2}' "/proc/$1/status"
  awk '/^(Pss|Private_Dirty):/ {printf "%s %s kB  ", $1, $2}' "/proc/$1/smaps_rollup"
}
echo "supervisor with 10 containers: $(mem "$sup")"
echo "one shim (running container):  $(mem "$shim")"
pss=0
for i in $(seq 1 10); do pss=$((pss + $(awk '/^Pss:/ {print $2}' "/proc/$(shim_pid "s$i")/smaps_rollup"))); done
echo "Pss of the 10 shims: $pss kB in all, $((pss / 10)) kB each"

# The supervisor also serves the kubelet's CRI: kubelet-like polling from 4 clients.
cargo build --quiet --example cri_poll
echo "CRI traffic for ${CRI_SECONDS:-20} s: $(${CARGO_TARGET_DIR:-target}/debug/examples/cri_poll "$KBOOT_STATE/cri.sock" "${CRI_SECONDS:-20}" 4)"
echo "supervisor after CRI traffic: $(mem "$sup")"
