#!/usr/bin/env bash
# Density (issue 16): the same kubelet v1.34.4, the same KubeletConfiguration (only the runtime
# endpoint differs) on the same node, once against kboot's CRI and once against Debian's
# containerd 1.6 + runc 1.1 (CRI v1, cgroupfs), alternating, ROUNDS rounds. Per round and
# runtime, for two Deployments of PODS busybox pods (`sleep`, and `probe`: the same with an
# exec readiness probe):
#   - per-pod start latency, pod created → Running as the API reports it (watch events,
#     time-stamped on arrival), p50/p90/p99, and the time until all are Running (Ready too
#     for `probe`);
#   - with all running, STEADY seconds of steady state: the runtime's Pss (kboot: the CRI
#     server + shims + pod holders; containerd: containerd + its shims, pause processes
#     reported apart) and CPU (utime+stime of the same processes), the kubelet's CPU, and the
#     kubelet's `kubelet_runtime_operations_duration_seconds` per operation;
#   - delete of the Deployment: time until the node has no pod, then until the runtime has
#     nothing left (processes, mounts, pod cgroups, network namespaces, CNI IP allocations),
#     polled for up to 120 s (the kubelet removes dead sandboxes in its 1-minute GC).
#
#   sudo bench/density.sh                     # ROUNDS=3 PODS=110 STEADY=60
#   RUNTIMES=kboot WORKLOADS=sleep PODS=10 ROUNDS=1 STEADY=5 sudo bench/density.sh  # a quick try
#   EVENTED_PLEG=true sudo bench/density.sh   # the kubelet's EventedPLEG feature gate on
#   sudo bench/density.sh --clean             # only the cleanup
#
# Control plane: etcd, kube-apiserver, kube-controller-manager and kube-scheduler v1.34.4 run
# directly as processes of this script (ports 12379, 16443; plain token authentication,
# AlwaysAllow, a self-signed serving certificate), for the whole run. Not a kboot master:
# its own kubelet and pods would share the node with the measured kubelet, and its runtime
# would be kboot's whether or not kboot is measured; here the measured kubelet and its
# runtime are the only things that change between runs, and the control plane costs both
# sides the same. Pods have no service account token (automountServiceAccountToken: false)
# and no service links: nothing but the runtime's work is on the pod start path.
#
# The kubelet runs on the host (its own --root-dir, port 10350, cgroupfs, maxPods 120), a CNI
# bridge `kbdens0` with host-local IPs from 10.215.0.0/23 (its own dataDir) for both
# runtimes, images from the loopback registry of scripts/e2e-images.sh (127.0.0.1:5055:
# busybox 1.36 and pause 3.10.1, the kubelet's default sandbox image, which containerd uses)
# pulled before any timing. The kubelet and the runtime hold this host's cluster lock
# (/tmp/kboot-host-cluster.lock) one round at a time; the lock is released between rounds so
# other users of the host can take turns. Everything is stopped at the end, containerd
# included. Raw JSON per round and the table: $RESULTS (default /var/tmp/kboot-density/results-<time>).
set -uo pipefail
# bash reads a script as it runs it: run from a copy, so editing this file mid-run is safe.
if [ -z "${DENSITY_HERE:-}" ]; then
  copy=$(mktemp /tmp/kboot-density-script.XXXXXX)
  cp "$0" "$copy"
  DENSITY_HERE=$(cd "$(dirname "$0")" && pwd) exec bash -c 'trap "rm -f \"$0\"" EXIT; bash "$0" "$@"' "$copy" "$@"
fi
cd "$DENSITY_HERE/.."
REPO=$PWD
. bench/lib/containerd.sh
[ "$(id -u)" -eq 0 ] || { echo "bench/density.sh: run as root" >&2; exit 2; }
ROUNDS=${ROUNDS:-3} PODS=${PODS:-110} STEADY=${STEADY:-60}
RUNTIMES=${RUNTIMES:-kboot containerd} WORKLOADS=${WORKLOADS:-sleep probe}
EVENTED_PLEG=${EVENTED_PLEG:-false} STEADY_PROBE=${STEADY_PROBE:-$STEADY}
CACHE=${KBOOT_BUILD_CACHE:-/var/cache/kboot-build}
K8S=$CACHE/k8s-v1.34.4/bin ETCD=$CACHE/etcd-v3.6.4/bin CRICTL=$CACHE/cri-tools-v1.34.0/bin/crictl
LOCK=/tmp/kboot-host-cluster.lock
W=/var/tmp/kboot-density
RESULTS=${RESULTS:-$W/results-$(date -u +%Y%m%dT%H%M%SZ)}
REG=127.0.0.1:5055 REG_CONF=$CACHE/e2e-registry/config.yml
API=https://127.0.0.1:16443 KCFG=$W/admin.conf
NODE=density BRIDGE=kbdens0 SUBNET=10.215.0.0/23 IPAM=$W/ipam NETD=$W/net.d
KST=$W/kboot/state KSOCK=$W/kboot/state/cri.sock
CD=$W/containerd CSOCK=$W/containerd/containerd.sock
KUBELET_ROOT=$W/kubelet-root
PY="python3 $REPO/bench/density.py"
log() { echo "density: $(date -u +%T) $*" >&2; }
kc() { "$K8S/kubectl" --kubeconfig "$KCFG" --request-timeout=30s "$@"; }
crictl() { "$CRICTL" --timeout 120s -r "$1" -i "$1" "${@:2}" 2> >(grep -v 'level=warning' >&2); }

# KBOOT=path: the kboot binary (default: this tree's release build, built if missing).
if [ "${1:-}" != --clean ] && [ -z "${KBOOT:-}" ]; then
  KBOOT=${CARGO_TARGET_DIR:-$REPO/target}/release/kboot
  [ -x "$KBOOT" ] || cargo build --release --quiet --bin kboot || exit 1
fi

# daemon NAME CMD...: starts CMD in its own session, output in $W/NAME.log, pid in $W/NAME.pid.
# The lock's descriptor is closed for it, so no daemon keeps the host lock.
daemon() {
  local name=$1; shift
  setsid "$@" > "$W/$name.log" 2>&1 < /dev/null {lockfd}>&- &
  echo $! > "$W/$name.pid"
}
stop() { # NAME [SIGNAL]: stops the daemon, waits up to 20 s, then SIGKILL
  local f=$W/$1.pid p
  [ -f "$f" ] || return 0
  p=$(cat "$f")
  kill "-${2:-TERM}" "$p" 2>/dev/null
  for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
  kill -9 "$p" 2>/dev/null
  rm -f "$f"
}
wait_for() { # SECONDS DESCRIPTION COMMAND...
  local secs=$1 what=$2 end; shift 2
  end=$(( $(date +%s) + secs ))
  while [ "$(date +%s)" -lt "$end" ]; do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  log "timed out after ${secs}s waiting for $what"; return 1
}

# What the runtime has on the node, one line per kind (a clean node prints only zeros).
leftovers() { # RUNTIME
  local procs mounts netns
  if [ "$1" = kboot ]; then
    procs=$(pgrep -f -- "--state $KST " | grep -vx "$(cat "$W/kboot.pid" 2>/dev/null)" | wc -l)
    netns=$(find "$KST/netns" -mindepth 1 2>/dev/null | wc -l)
  else
    procs=$(pgrep -f -- "containerd-shim-runc-v2 .*-address $CSOCK" | wc -l)
    netns=$(find /var/run/netns -name 'cni-*' 2>/dev/null | wc -l)
  fi
  mounts=$(grep -cE " ($W/(kboot|containerd|kubelet-root)/|/var/run/netns/cni-|/run/netns/cni-)" /proc/self/mountinfo)
  echo "processes=$procs mounts=$mounts netns=$netns" \
    "pod_cgroups=$(find /sys/fs/cgroup/memory/kubepods -mindepth 1 -type d -name 'pod*' 2>/dev/null | wc -l)" \
    "cni_ips=$(find "$IPAM" -type f ! -name 'last_reserved_ip*' ! -name lock 2>/dev/null | wc -l)"
}
is_clean() { leftovers "$1" | grep -qE '^processes=0 mounts=0 netns=0 pod_cgroups=0 cni_ips=0$'; }

runtime_pids() { # RUNTIME: the processes counted as the runtime
  if [ "$1" = kboot ]; then
    cat "$W/kboot.pid"; pgrep -f -- "--state $KST " | grep -vx "$(cat "$W/kboot.pid")"
  else
    cat "$W/containerd.pid"; pgrep -f -- "containerd-shim-runc-v2 .*-address $CSOCK"
  fi | sort -u
}
pause_pids() { # containerd's sandbox processes (children of its shims, running /pause)
  local s; for s in $(pgrep -f -- "containerd-shim-runc-v2 .*-address $CSOCK"); do
    for c in $(pgrep -P "$s"); do [ "$(readlink "/proc/$c/exe" 2>/dev/null)" = /pause ] && echo "$c"; done
  done
}

umount_under() { # DIR: every mount at or under DIR, deepest first
  grep -oE " $1(/[^ ]*)? " /proc/self/mountinfo | sort -r -u | while read -r m; do umount -l "$m" 2>/dev/null; done
}

cleanup() {
  set +e
  log "cleanup"
  [ -n "${locker:-}" ] && kill "$locker" 2>/dev/null
  stop kubelet
  [ -S "$KSOCK" ] && crictl "unix://$KSOCK" rmp --force --all >/dev/null 2>&1
  [ -S "$CSOCK" ] && crictl "unix://$CSOCK" rmp --force --all >/dev/null 2>&1
  stop kboot; stop containerd
  # Shims left by either runtime: only this run's (their command lines name its directories).
  for p in $(pgrep -f -- "--state $KST |-address $CSOCK"); do kill -9 "$p" 2>/dev/null; done
  for d in kube-scheduler kube-controller-manager kube-apiserver etcd; do stop "$d"; done
  [ -f "$W/registry.pid" ] && stop registry
  umount_under "$W"
  # What is not under $W (containerd's netns, the kubelet's /kubepods cgroups) is only this
  # run's while it holds the host lock: another cluster's kubelet uses /kubepods otherwise.
  if [ "${HOLD:-0}" = 1 ]; then
    grep -oE " /(var/)?run/netns/cni-[^ ]*" /proc/self/mountinfo | sort -u | while read -r m; do umount -l "$m" 2>/dev/null; done
    for n in /var/run/netns/cni-*; do [ -e "$n" ] && ip netns delete "${n##*/}" 2>/dev/null; done
    for d in /sys/fs/cgroup/*/kubepods; do [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null; done
  fi
  ip link show "$BRIDGE" >/dev/null 2>&1 && ip link delete "$BRIDGE"
  [ -n "${lockfd:-}" ] && flock -u "$lockfd" 2>/dev/null
  # Keep the results and the downloaded images (kboot root, containerd root) for the next run.
  rm -rf "$W/kubelet-root" "$W/etcd" "$KST" "$CD/state"
}
if [ "${1:-}" = --clean ]; then cleanup; exit 0; fi
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$W" "$RESULTS" "$NETD" "$IPAM"
exec {lockfd}> "$LOCK"
echo "# bench/density.sh $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD) kboot $KBOOT" > "$RESULTS/run.txt"
echo "ROUNDS=$ROUNDS PODS=$PODS STEADY=$STEADY STEADY_PROBE=$STEADY_PROBE RUNTIMES=$RUNTIMES WORKLOADS=$WORKLOADS EVENTED_PLEG=$EVENTED_PLEG" >> "$RESULTS/run.txt"

# --- registry (shared with scripts/e2e.sh: reused when it already answers) --------------------
# Checked again at every round: a registry of another user of the host (the e2e, the
# conformance run) answers now and may be gone when the next round starts.
registry_up() {
  if ! curl -fsS "http://$REG/v2/" >/dev/null 2>&1; then
    [ -f "$REG_CONF" ] || { log "no loopback registry ($REG_CONF): run scripts/e2e-images.sh once"; return 1; }
    stop registry
    daemon registry docker-registry serve "$REG_CONF"
    wait_for 20 "the registry" curl -fsS "http://$REG/v2/" || return 1
  fi
  for ref in library/busybox:1.36 pause:3.10.1; do
    curl -fsS -o /dev/null "http://$REG/v2/${ref%:*}/manifests/${ref#*:}" \
      -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
      || { log "the registry has no $ref (scripts/e2e-images.sh, scripts/conformance-images.sh)"; return 1; }
  done
}
registry_up || exit 1

# --- control plane ------------------------------------------------------------------------------
log "control plane"
mkdir -p "$W/pki"
openssl genrsa -out "$W/pki/sa.key" 2048 2>/dev/null
openssl rsa -in "$W/pki/sa.key" -pubout -out "$W/pki/sa.pub" 2>/dev/null
TOKEN=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
echo "$TOKEN,density-admin,1,system:masters" > "$W/pki/tokens.csv"
chmod 600 "$W/pki/"*
cat > "$KCFG" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: d, cluster: {server: "$API", insecure-skip-tls-verify: true}}]
users: [{name: d, user: {token: "$TOKEN"}}]
contexts: [{name: d, context: {cluster: d, user: d}}]
current-context: d
EOF
chmod 600 "$KCFG"
rm -rf "$W/etcd"
daemon etcd "$ETCD/etcd" --data-dir "$W/etcd" --name density --unsafe-no-fsync \
  --listen-client-urls http://127.0.0.1:12379 --advertise-client-urls http://127.0.0.1:12379 \
  --listen-peer-urls http://127.0.0.1:12380 --initial-advertise-peer-urls http://127.0.0.1:12380 \
  --initial-cluster density=http://127.0.0.1:12380 --listen-metrics-urls http://127.0.0.1:12381
daemon kube-apiserver "$K8S/kube-apiserver" --etcd-servers http://127.0.0.1:12379 \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port 16443 --cert-dir "$W/pki/apiserver" \
  --token-auth-file "$W/pki/tokens.csv" --authorization-mode AlwaysAllow \
  --service-account-issuer https://kubernetes.default.svc --service-account-key-file "$W/pki/sa.pub" \
  --service-account-signing-key-file "$W/pki/sa.key" --service-cluster-ip-range 10.216.0.0/24 \
  --max-requests-inflight 800 --max-mutating-requests-inflight 400
wait_for 90 "the API server" kc get --raw /readyz || { tail -20 "$W/kube-apiserver.log" >&2; exit 1; }
daemon kube-controller-manager "$K8S/kube-controller-manager" --kubeconfig "$KCFG" --leader-elect=false \
  --secure-port 0 --service-account-private-key-file "$W/pki/sa.key" --use-service-account-credentials=false \
  --kube-api-qps 200 --kube-api-burst 400 --concurrent-replicaset-syncs 5
daemon kube-scheduler "$K8S/kube-scheduler" --kubeconfig "$KCFG" --leader-elect=false --secure-port 0 \
  --kube-api-qps 200 --kube-api-burst 400
kc create namespace density >/dev/null
wait_for 60 "the default service account" kc -n density get serviceaccount default || exit 1

# --- what both runtimes share ------------------------------------------------------------------
cat > "$NETD/10-density.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "density", "plugins": [
 {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
  "ipam": {"type": "host-local", "dataDir": "$IPAM", "ranges": [[{"subnet": "$SUBNET"}]],
           "routes": [{"dst": "0.0.0.0/0"}]}},
 {"type": "portmap", "capabilities": {"portMappings": true}}]}
EOF
mkdir -p "$W/kboot/config"
printf '[[registry]]\nhost = "%s"\nmirrors = ["%s"]\nfallback = false\n' docker.io "$REG" registry.k8s.io "$REG" > "$W/kboot/config/registries.toml"
printf '\n[[registry]]\nhost = "%s"\ninsecure = true\n' "$REG" >> "$W/kboot/config/registries.toml"
containerd_config "$CD" "$CSOCK" "$REG" registry.k8s.io/pause:3.10.1 "$NETD"

kubelet_config() { # ENDPOINT: the one KubeletConfiguration, only the endpoint differs
  cat <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: $1
imageServiceEndpoint: $1
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
maxPods: 120
port: 10350
healthzPort: 10348
readOnlyPort: 0
podLogsDir: $W/pod-logs
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
nodeStatusUpdateFrequency: 2s
imageGCHighThresholdPercent: 100
evictionHard: {memory.available: "0%", nodefs.available: "0%", imagefs.available: "0%"}
localStorageCapacityIsolation: false
serializeImagePulls: false
featureGates: {EventedPLEG: $EVENTED_PLEG}
EOF
}
cat > "$W/kubelet.conf" < "$KCFG"

deployment() { # WORKLOAD
  cat <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: density-$1, namespace: density}
spec:
  replicas: $PODS
  selector: {matchLabels: {app: density-$1}}
  template:
    metadata: {labels: {app: density-$1}}
    spec:
      automountServiceAccountToken: false
      enableServiceLinks: false
      terminationGracePeriodSeconds: 10
      containers:
      - name: c
        image: docker.io/library/busybox:1.36
        imagePullPolicy: IfNotPresent
        # A shell that exits on SIGTERM, so the delete measures the runtime, not the grace period.
        command: ["sh", "-c", "trap 'exit 0' TERM; sleep 86400 & wait"]
EOF
  [ "$1" = probe ] && cat <<EOF
        readinessProbe: {exec: {command: ["true"]}, periodSeconds: 10}
EOF
}

runtime_up() { # RUNTIME → the endpoint on stdout
  if [ "$1" = kboot ]; then
    daemon kboot "$KBOOT" --root "$W/kboot/root" --state "$KST" --config "$W/kboot/config" \
      cri serve --cni-conf-dir "$NETD" --cni-bin-dir /usr/lib/cni
    wait_for 30 "kboot's CRI socket" test -S "$KSOCK" || return 1
    echo "unix://$KSOCK"
  else
    daemon containerd containerd --config "$CD/config.toml"
    wait_for 30 "containerd's socket" test -S "$CSOCK" || return 1
    echo "unix://$CSOCK"
  fi
}

node_ready() {
  kc get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' | grep -qx True
}

sample() { # RUNTIME → {"runtime":…, "kubelet":…, "pause":…}
  local rt=$1
  printf '{"runtime": %s, "kubelet": %s, "pause": %s}' \
    "$($PY proc $(runtime_pids "$rt"))" "$($PY proc "$(cat "$W/kubelet.pid")")" \
    "$($PY proc $( [ "$rt" = containerd ] && pause_pids))"
}

metrics() { # FILE: the kubelet's runtime operation metrics as JSON
  curl -sk https://127.0.0.1:10350/metrics > "$1.prom" && $PY metrics "$1.prom" > "$1" && rm -f "$1.prom"
}

workload() { # RUNTIME WORKLOAD ROUND → $RESULTS/round-R-RUNTIME-WORKLOAD.json
  local rt=$1 wl=$2 r=$3 base=$RESULTS/r$3-$1-$2 t0 t1 s0 s1 empty_s clean_s ready=""
  [ "$wl" = probe ] && ready=--ready
  metrics "$base.ops0.json"
  deployment "$wl" > "$base.yaml"
  $PY watch "$K8S/kubectl" "$KCFG" density "app%3Ddensity-$wl" "$PODS" 600 "$base.start.json" $ready &
  local watcher=$!
  sleep 1
  kc apply -f "$base.yaml" >/dev/null
  wait "$watcher"
  log "$rt $wl started: $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["pods_running"], "running, p50/p99", d["start_s"]["p50"], d["start_s"]["p99"], "all", d["all_running_s"])' "$base.start.json")"
  sleep 5
  s0=$(sample "$rt"); t0=$(date +%s.%N)
  # The probe workload's steady state: STEADY_PROBE seconds (default as STEADY).
  local steady=$STEADY; [ "$wl" = probe ] && steady=$STEADY_PROBE
  sleep "$steady"
  s1=$(sample "$rt"); t1=$(date +%s.%N)
  metrics "$base.ops1.json"
  t0=$(date +%s.%N)
  kc -n density delete deployment "density-$wl" --wait=false >/dev/null
  wait_for 600 "the node to have no pod" sh -c "[ \"\$('$K8S/kubectl' --kubeconfig '$KCFG' -n density get pods --no-headers 2>/dev/null | wc -l)\" = 0 ]"
  t1=$(date +%s.%N); empty_s=$(echo "$t1 - $t0" | bc)
  clean_s=null
  if wait_for 120 "the $rt node to be clean" is_clean "$rt"; then clean_s=$(echo "$(date +%s.%N) - $t0" | bc); fi
  local left; left=$(leftovers "$rt")
  log "$rt $wl deleted: empty after ${empty_s}s, clean after ${clean_s}s ($left)"
  $PY combine "$base.start.json" "$s0" "$s1" "$steady" "$base.ops1.json" "$base.ops0.json" "$empty_s" "$clean_s" "$left" > "$base.json"
  rm -f "$base.start.json" "$base.ops0.json" "$base.ops1.json" "$base.yaml"
}

run_runtime() { # RUNTIME ROUND
  local rt=$1 r=$2 ep wl
  log "round $r: $rt"
  ep=$(runtime_up "$rt") || { log "$rt did not start: $(tail -5 "$W/$rt.log")"; return 1; }
  # Images before any timing (both runtimes keep them between rounds).
  crictl "$ep" pull docker.io/library/busybox:1.36 >/dev/null || return 1
  [ "$rt" = containerd ] && { crictl "$ep" pull registry.k8s.io/pause:3.10.1 >/dev/null || return 1; }
  kubelet_config "$ep" > "$W/kubelet.yaml"
  rm -rf "$KUBELET_ROOT"; mkdir -p "$KUBELET_ROOT" "$W/pod-logs"
  daemon kubelet "$K8S/kubelet" --config "$W/kubelet.yaml" --kubeconfig "$W/kubelet.conf" \
    --root-dir "$KUBELET_ROOT" --hostname-override "$NODE" --v=1
  wait_for 120 "node $NODE Ready ($rt)" node_ready || { grep -E '^E' "$W/kubelet.log" | tail -10 >&2; return 1; }
  sleep 5
  for wl in $WORKLOADS; do workload "$rt" "$wl" "$r" || return 1; done
  stop kubelet
  umount_under "$KUBELET_ROOT"
  kc delete node "$NODE" >/dev/null
  stop "$rt"
  for d in /sys/fs/cgroup/*/kubepods; do [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null; done
  return 0
}

for r in $(seq "$ROUNDS"); do
  # Alternate which runtime goes first.
  order=$RUNTIMES
  [ $((r % 2)) = 0 ] && order=$(echo "$RUNTIMES" | tr ' ' '\n' | tac | tr '\n' ' ')
  log "round $r ($order): waiting for $LOCK"
  # In the background and waited for, so a SIGTERM meanwhile runs the cleanup at once.
  flock "$lockfd" & locker=$!
  wait "$locker" || exit 1
  HOLD=1
  log "round $r: lock held; load average $(cut -d' ' -f1-3 /proc/loadavg)"
  registry_up || { HOLD=0; flock -u "$lockfd"; exit 1; }
  load0=$(cut -d' ' -f1 /proc/loadavg)
  ok=1
  for rt in $order; do run_runtime "$rt" "$r" || { ok=0; log "round $r: $rt failed"; stop kubelet; kc delete node "$NODE" >/dev/null 2>&1; stop "$rt"; }; done
  load1=$(cut -d' ' -f1 /proc/loadavg)
  HOLD=0; flock -u "$lockfd"
  python3 - "$RESULTS" "$r" "$order" "$load0" "$load1" > "$RESULTS/round-$r.json" <<'PY'
import json, os, sys
res, r, order, l0, l1 = sys.argv[1:]
out = {"round": int(r), "order": order.split(), "loadavg_start": float(l0), "loadavg_end": float(l1)}
for fn in sorted(os.listdir(res)):
    if fn.startswith(f"r{r}-") and fn.endswith(".json"):
        _, rt, wl = fn[:-5].split("-", 2)
        out.setdefault(rt, {})[wl] = json.load(open(os.path.join(res, fn)))
print(json.dumps(out, indent=1))
PY
  [ "$ok" = 1 ] || log "round $r incomplete (logs in $W)"
  # Let a waiting user of the host lock go first.
  [ "$r" -lt "$ROUNDS" ] && sleep 10
done
$PY table "$RESULTS" | tee "$RESULTS/table.md"
log "results in $RESULTS"
