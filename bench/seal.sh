#!/usr/bin/env bash
# The seal's added start cost (src/seal.rs): the same kboot binary run from disk (it
# re-executes itself from its sealed overlay copy) and through a read-only overlay mount
# (it counts as sealed: no re-exec). As root; never a timed test.
#
#   sudo bench/seal.sh target/release/kboot       # RUNS=40 by default
set -euo pipefail
[ "$(id -u)" -eq 0 ] || { echo "bench/seal.sh: run as root" >&2; exit 2; }
KBOOT=$(realpath "${1:?usage: bench/seal.sh PATH/TO/kboot}")
W=$(mktemp -d /tmp/kboot-sealbench-XXXXXX)
export KBOOT_ROOT=$W/root KBOOT_STATE=$W/state KBOOT_CONFIG=$W/config
R=$W/rootfs
mkdir -p "$R/bin" "$R/etc" "$R/proc" "$R/sys" "$R/dev" "$R/tmp" "$W/empty" "$W/ro"
cp /bin/busybox "$R/bin/"
for a in true sh sleep; do ln -s /bin/busybox "$R/bin/$a"; done
echo 'root:x:0:0::/root:/bin/sh' >"$R/etc/passwd"
printf 'services:\n  t:\n    image: dir:%s\n    command: ["/bin/true"]\n' "$R" >"$W/true.yml"
cleanup() { "$KBOOT" down >/dev/null 2>&1 || true; umount "$W/ro" 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
mount -t overlay overlay -o "lowerdir=$(dirname "$KBOOT"):$W/empty" "$W/ro"
"$KBOOT" run -f "$W/true.yml" >/dev/null
B=$KBOOT_ROOT/containers/t/bundle
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
hyperfine -N --warmup 5 --runs "${RUNS:-40}" \
  -n "kboot shim, sealed at start" "$KBOOT shim --id t --bundle $B" \
  -n "kboot shim, already sealed" "$W/ro/kboot shim --id t --bundle $B" \
  -n "kboot exec (fails: not running), sealed at start" "$KBOOT exec t -- true" \
  -n "kboot exec (fails: not running), already sealed" "$W/ro/kboot exec t -- true" -i --export-json "$W/h.json" >/dev/null
python3 - "$W/h.json" <<'PY'
import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    print(f"| {r['command']} | {r['median']*1000:.2f} | {r['mean']*1000:.2f} | {r['stddev']*1000:.2f} | {(r['user']+r['system'])*1000:.2f} |")
PY
