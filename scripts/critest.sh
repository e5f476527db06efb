#!/usr/bin/env bash
# Runs critest (cri-tools' validation suite) against `kboot cri serve`, as root, isolated:
# the server, a Debian docker-registry on 127.0.0.1:5000 and the pods' CNI bridge all live in
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
# Defaults: the run docs/cri.md reports. Skipped: what the host lacks (AppArmor, SELinux), the
# upstream-digest image, and features not implemented yet.
FOCUS=${FOCUS:-'Runtime info|PodSandbox|Idempotence|Image Manager|Container runtime|Security Context|Multiple Containers|Networking|Container Mount|Container OOM|Streaming'}
SKIP=${SKIP:-'public image with digest|support attach|AppArmor|SELinux|UserNamespaces|sysctls|SeccompProfile|SupplementalGroupsPolicy'}

cargo build --quiet --bin kboot && cargo build --quiet -p rootfs-tools
KBOOT=$PWD/target/debug/kboot
ROOTFS_TOOLS=$PWD/target/debug/rootfs-tools

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
stage="$OUT/busybox-rootfs"
mkdir -p "$stage/bin" "$stage/etc" "$stage/tmp" "$stage/var/run"
cp /bin/busybox "$stage/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$stage/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\nwww-data:x:33:33:www-data:/var/www:/bin/false\ndefault-user:x:1000:50000::/:/bin/sh\n' > "$stage/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\nwww-data:x:33:\ngroup-defined-in-image:x:50000:default-user\n' > "$stage/etc/group"
chmod 1777 "$stage/tmp"
# A page for the web-server images (critest checks only for HTTP 200 at /).
mkdir -p "$stage/www"
echo 'kboot critest web server' > "$stage/www/index.html"
push() { # NAME (as pushed to the local registry) then extra rootfs-tools flags
  local name=$1; shift
  in_ns "$ROOTFS_TOOLS" build --add "$stage:/" "$@" -o "$OUT/layouts/${name//[\/:]/_}" --push "127.0.0.1:5000/$name" --insecure >/dev/null
}
E=e2e-test-images R=k8s-staging-cri-tools
push "$E/busybox:1.29-2" --cmd top --env PATH=/bin
# Upstream's httpd-foreground prints an AH00558 line naming httpd at start; critest's
# "Multiple Containers ... container log" waits for "httpd" in the log. busybox httpd is silent.
push "$E/httpd:2.4.39-4" --entrypoint=sh --entrypoint=-c \
  --entrypoint='echo "AH00558: httpd: could not determine the server FQDN (kboot test stand-in)" >&2; exec httpd -f -p 80' --env PATH=/bin
# nginx stand-ins: busybox httpd on the ports critest expects (80; 12003 for hostnet-nginx).
push "$E/nginx:1.14-2" --entrypoint=httpd --entrypoint=-f --entrypoint=-p --entrypoint=80 --entrypoint=-h --entrypoint=/www --env PATH=/bin
push "$R/hostnet-nginx-amd64:latest" --entrypoint=httpd --entrypoint=-f --entrypoint=-p --entrypoint=12003 --entrypoint=-h --entrypoint=/www --env PATH=/bin
for t in 1 2 3; do push "$R/test-image-tags:$t" --cmd top --env PATH=/bin --label kboot.test/marker=tags; done
for i in 1 2 3; do push "$R/test-image-$i:latest" --cmd top --env PATH=/bin --label "kboot.test/marker=$i"; done
push "$R/test-image-latest:latest" --cmd top --env PATH=/bin --label kboot.test/marker=latest
push "$R/test-image-tag:test" --cmd top --env PATH=/bin --label kboot.test/marker=tag
push "$R/test-image-tag:all" --cmd top --env PATH=/bin --label kboot.test/marker=tag
push "$R/test-image-user-uid:latest" --cmd top --env PATH=/bin --user 1002
push "$R/test-image-user-username:latest" --cmd top --env PATH=/bin --user www-data
push "$R/test-image-user-uid-group:latest" --cmd top --env PATH=/bin --user 1003:1004
push "$R/test-image-user-username-group:latest" --cmd top --env PATH=/bin --user www-data:1004
push "$R/test-image-predefined-group:latest" --cmd top --env PATH=/bin --user 1000

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
# critest joins the namespace too: the streaming URLs kboot hands out are on its loopback.
nsenter --net=/proc/$holder_pid/ns/net -- "$CRI_TOOLS/critest" -runtime-endpoint "$endpoint" -image-endpoint "$endpoint" \
  -ginkgo.focus="$FOCUS" -ginkgo.skip="$SKIP" -ginkgo.no-color -ginkgo.timeout=40m "$@" > "$OUT/critest.log" 2>&1
rc=$?
set -e
grep -E '^(Ran [0-9]+ of|FAIL!|SUCCESS!|  \[FAIL\])' "$OUT/critest.log" || tail -20 "$OUT/critest.log"
echo "critest.sh: log in $OUT/critest.log, server log in $OUT/server.log"
exit $rc
