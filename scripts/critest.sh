#!/usr/bin/env bash
# Runs critest (cri-tools' validation suite) against `kboot cri serve`, as root, isolated:
# the server, critest, a Debian docker-registry on 127.0.0.1:5000 and the pods' CNI bridge live in
# a network namespace this script creates, so no real network is touched. The images critest
# needs are rebuilt with rootfs-tools, pushed under their original names and reached through
# kboot's mirror rules (registries.toml).
#
#   sudo scripts/critest.sh [extra critest flags, e.g. -ginkgo.focus=PodSandbox]
#
# Prints critest's summary; the full log is in $OUT/critest.log (OUT defaults to a temp dir).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "critest.sh: run as root" >&2; exit 2; }

CRI_TOOLS=${CRI_TOOLS:-/var/cache/kboot-build/cri-tools-v1.34.0/bin}
[ -x "$CRI_TOOLS/critest" ] || scripts/build-k8s.sh --only cri-tools
CNI_BIN=${CNI_BIN:-/usr/lib/cni}
OUT=${OUT:-$(mktemp -d /tmp/kboot-critest.XXXXXX)}
# The server's --root and --state are below $OUT, and a pod in a user namespace reaches its
# rootfs and namespaces there as an unprivileged host uid: others must be able to search
# $OUT (mktemp makes it 0700; kboot refuses user namespaces then, and critest's
# NamespaceMode_POD spec would skip). 0711, as containerd's root: search, no listing.
chmod 0711 "$OUT"
# Defaults: the run docs/cri.md reports. Skipped: what the host lacks (AppArmor, SELinux), the
# upstream-digest image.
FOCUS=${FOCUS:-'Runtime info|PodSandbox|Idempotence|Image Manager|Container runtime|Security Context|Multiple Containers|Networking|Container Mount|Container OOM|Streaming'}
SKIP=${SKIP:-'public image with digest|AppArmor|SELinux'}

# KBOOT and ROOTFS_TOOLS (both) name prebuilt binaries: a host without cargo, such as the
# guest of scripts/vm-critest.sh.
if [ -z "${KBOOT:-}" ] || [ -z "${ROOTFS_TOOLS:-}" ]; then
  cargo build --quiet --bin kboot && cargo build --quiet -p rootfs-tools
  KBOOT=${CARGO_TARGET_DIR:-$PWD/target}/debug/kboot
  ROOTFS_TOOLS=${CARGO_TARGET_DIR:-$PWD/target}/debug/rootfs-tools
fi

holder_pid=""
cleanup() {
  # Pods critest left behind (failed specs) go first, while the server still runs.
  [ -S "$OUT/state/cri.sock" ] && "$CRI_TOOLS/crictl" -r "unix://$OUT/state/cri.sock" rmp --force --all >/dev/null 2>&1 || true
  [ -n "${server_pid:-}" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
  [ -n "${registry_pid:-}" ] && kill "$registry_pid" 2>/dev/null || true
  [ -n "$holder_pid" ] && kill "$holder_pid" 2>/dev/null || true
}
trap cleanup EXIT
unshare --net -- sleep infinity &
holder_pid=$!
# Before `unshare` runs, the holder's namespace is still the host's: wait until it is not.
for _ in $(seq 100); do
  [ "$(readlink /proc/$holder_pid/ns/net)" != "$(readlink /proc/self/ns/net)" ] && break
  sleep 0.05
done
[ "$(readlink /proc/$holder_pid/ns/net)" != "$(readlink /proc/self/ns/net)" ] || { echo "critest.sh: no private netns" >&2; exit 1; }
in_ns() { nsenter --net=/proc/$holder_pid/ns/net -- "$@"; }
in_ns ip link set lo up

# --- registry -----------------------------------------------------------------------------
mkdir -p "$OUT/registry" "$OUT/config" "$OUT/net.d"
cat > "$OUT/registry/config.yml" <<YAML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $OUT/registry/data}, delete: {enabled: true}}
http: {addr: 127.0.0.1:5000}
YAML
# nsenter directly (not the in_ns function, which would run in a subshell): $! must be the registry.
nsenter --net=/proc/$holder_pid/ns/net -- /usr/bin/docker-registry serve "$OUT/registry/config.yml" > "$OUT/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 50); do in_ns bash -c 'exec 3<>/dev/tcp/127.0.0.1/5000' 2>/dev/null && break; sleep 0.1; done

# --- images -------------------------------------------------------------------------------
ROOTFS_TOOLS=$ROOTFS_TOOLS scripts/critest-images.sh "$holder_pid"

cat > "$OUT/config/registries.toml" <<TOML
[[registry]]
host = "registry.k8s.io"
mirrors = ["127.0.0.1:5000"]
fallback = false

[[registry]]
host = "gcr.io"
mirrors = ["127.0.0.1:5000"]
fallback = false

[[registry]]
host = "127.0.0.1:5000"
insecure = true
TOML

cat > "$OUT/net.d/10-critest.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "critest", "plugins": [
  {"type": "bridge", "bridge": "kbcritest0", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.232.0.0/16"}]], "dataDir": "$OUT/ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
JSON

# --- server and critest ---------------------------------------------------------------------
KBOOT_LOG=${KBOOT_LOG:-kboot=info} nsenter --net=/proc/$holder_pid/ns/net -- "$KBOOT" --root "$OUT/root" --state "$OUT/state" --config "$OUT/config" \
  cri serve --cni-conf-dir "$OUT/net.d" --cni-bin-dir "$CNI_BIN" > "$OUT/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do [ -S "$OUT/state/cri.sock" ] && break; sleep 0.1; done
endpoint="unix://$OUT/state/cri.sock"
set +e
# critest itself runs in the namespace too: the streaming URLs kboot hands out are on its
# loopback, and it fetches pod IPs and host ports and serves the port the HostNetwork spec looks for.
nsenter --net=/proc/$holder_pid/ns/net -- "$CRI_TOOLS/critest" -runtime-endpoint "$endpoint" -image-endpoint "$endpoint" \
  -ginkgo.focus="$FOCUS" -ginkgo.skip="$SKIP" -ginkgo.no-color -ginkgo.timeout=40m "$@" > "$OUT/critest.log" 2>&1
rc=$?
set -e
grep -E '^(Ran [0-9]+ of|FAIL!|SUCCESS!|  \[FAIL\])' "$OUT/critest.log" || tail -20 "$OUT/critest.log"
echo "critest.sh: log in $OUT/critest.log, server log in $OUT/server.log"
exit $rc
