# The two-node kboot cluster scripts/e2e.sh and scripts/conformance.sh run (sourced): a master
# on the host and a worker in a network namespace with its own mount namespace, their
# kboot/kubectl wrappers, diagnostics and cleanup. The sourcing script sets HERE (its
# directory), REPO, RESULTS (a file FINDING lines go to) and may set E2E_DIR first; log() is
# its own. docs/e2e.md describes the topology.
# shellcheck shell=bash
K8S_VERSION=${K8S_VERSION:-v1.34.4}
CACHE=${KBOOT_BUILD_CACHE:-/var/cache/kboot-build}
export E2E_DIR=${E2E_DIR:-/var/tmp/kboot-e2e}
# KBOOT=path: the kboot binary to test (e.g. target/release/kboot for the figures).
KBOOT=${KBOOT:-${CARGO_TARGET_DIR:-$REPO/target}/debug/kboot}
KUBECTL_BIN=$CACHE/k8s-$K8S_VERSION/bin/kubectl
READY_TIMEOUT=${E2E_READY_TIMEOUT:-300s}
MASTER_IP=10.213.0.1 WORKER_IP=10.213.0.2 NETNS=kboot-e2e-w VETH_M=kbe2e-m VETH_W=kbe2e-w
# The worker's cgroup subtree (in every hierarchy): its kubelet's /kubepods must not be the
# master's, a kubelet kills the processes of pod cgroups it does not know.
W_CGROUP=kboot-e2e-w
M_ROOT=$E2E_DIR/master/root M_STATE=$E2E_DIR/master/state CONF=$E2E_DIR/config
W_ROOT=$E2E_DIR/worker/root W_STATE=$E2E_DIR/worker/state
# E2E_USE_CNI=1: flannel (USE_CNI=true) instead of the bridge network; FLANNEL_BACKEND as given
# (vxlan by default here: the worker's node is behind a veth pair, vxlan runs over it).
USE_CNI=false NET_ARGS=()
if [ "${E2E_USE_CNI:-0}" = 1 ]; then
  USE_CNI=true NET_ARGS=(--use-cni --flannel-backend "${E2E_FLANNEL_BACKEND:-vxlan}")
fi
KUBECONFIG_FILE=$E2E_DIR/admin.conf

# flannel_running SUBNET_FILE km|kw: kboot's flannel container of that node is running and
# has written the node's subnet file (it exits and restarts until the node has a pod CIDR).
flannel_running() {
  local env=$1; shift
  "$@" ps 2>/dev/null | grep -E '^flannel[[:space:]]' | grep -qw running && grep -q '^FLANNEL_SUBNET=' "$env"
}
km() { "$KBOOT" --root "$M_ROOT" --state "$M_STATE" --config "$CONF" "$@"; }
kw() { ip netns exec "$NETNS" nsenter --mount="$E2E_DIR/worker/mnt" \
         "$KBOOT" --root "$W_ROOT" --state "$W_STATE" --config "$CONF" "$@"; }
kc() { "$KUBECTL_BIN" --kubeconfig "$KUBECONFIG_FILE" --request-timeout=20s "$@"; }
# wait_for SECONDS DESCRIPTION COMMAND...: retries COMMAND once a second.
wait_for() {
  local secs=$1 what=$2; shift 2
  for _ in $(seq "$secs"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  log "timed out after ${secs}s waiting for $what"; return 1
}

diagnose() {
  log "---- diagnostics ----"
  km ps 2>&1 | sed 's/^/  ps: /' >&2
  for c in etcd kubelet kube-bootstrap; do
    km logs "$c" --tail 25 2>&1 | sed "s/^/  $c: /" >&2
  done
  local sup=$M_STATE/supervisor.log
  [ -f "$sup" ] && tail -n 30 "$sup" | sed 's/^/  supervisor: /' >&2
  km logs kubelet 2>/dev/null | grep -E '^E[0-9]{4}|error|Error|failed' | tail -n 25 | sed 's/^/  kubelet-errors: /' >&2
  if [ -s "$KUBECONFIG_FILE" ]; then
    kc get nodes -o wide 2>&1 | sed 's/^/  nodes: /' >&2
    kc get pods -A -o wide 2>&1 | sed 's/^/  pods: /' >&2
    kc get events -A --sort-by=.lastTimestamp 2>&1 | tail -n 15 | sed 's/^/  events: /' >&2
  fi
}

# Pids this run started: the supervisors (pid files in our own state dirs), their shims
# (records under state/shims) and the shims' children (the containers).
# Arguments: the state dirs (default: master and worker).
our_pids() {
  local st f p dirs=("$@")
  [ $# -gt 0 ] || dirs=("$M_STATE" "$W_STATE")
  for st in "${dirs[@]}"; do
    [ -f "$st/supervisor.pid" ] && cat "$st/supervisor.pid"
    # Shims (also the CRI's) carry --state on their command line: this run's own directory.
    for p in $(pgrep -f -- "--state $st "); do echo "$p"; pgrep -P "$p"; done
    for f in "$st"/shims/*.json; do
      [ -f "$f" ] || continue
      for p in $(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r.get("shim_pid") or "", r.get("init_pid") or "")' "$f"); do
        echo "$p"; pgrep -P "$p"
      done
    done
  done | sort -u | while read -r p; do kill -0 "$p" 2>/dev/null && echo "$p"; done
}

# Host paths kboot's roles use that are not under --root/--state: note what existed before,
# so cleanup removes only what this run created.
HOST_MARK=$E2E_DIR/host-before
host_preflight() {
  if mountpoint -q /var/lib/kubelet || [ -n "$(ls -A /etc/kubernetes/manifests 2>/dev/null)" ]; then
    log "/var/lib/kubelet is mounted or /etc/kubernetes/manifests is not empty: another cluster runs here; not touching it"
    exit 2
  fi
  { [ -e /var/lib/kubelet ] && echo kubelet-dir
    [ -e /etc/kubernetes ] && echo etc-kubernetes
    [ -e /etc/cni/net.d ] && echo cni-conf
    [ -e /opt/cni/bin ] && echo cni-bin
    [ -e /opt/cni/bin/flannel ] && echo cni-flannel; } > "$HOST_MARK"
}
host_restore() {
  [ -f "$HOST_MARK" ] || return 0
  if mountpoint -q /var/lib/kubelet; then
    echo "FINDING kboot down --purge left mounts under /var/lib/kubelet: $(grep -c ' /var/lib/kubelet' /proc/self/mountinfo); unmounted by e2e cleanup" | tee -a "$RESULTS" >&2
    umount -R /var/lib/kubelet
  fi
  grep -qx kubelet-dir "$HOST_MARK" || rm -rf /var/lib/kubelet
  rm -rf /etc/kubernetes/manifests /etc/kubernetes/kubelet-config.yaml
  rm -f /etc/kubernetes/kboot-root
  grep -qx etc-kubernetes "$HOST_MARK" || rmdir /etc/kubernetes 2>/dev/null
  rm -f /etc/cni/net.d/10-kboot-bridge.conflist /etc/cni/net.d/10-flannel.conflist
  rm -rf /etc/kubernetes/flannel /run/flannel
  grep -qx cni-flannel "$HOST_MARK" || rm -f /opt/cni/bin/flannel
  grep -qx cni-bin "$HOST_MARK" || rmdir /opt/cni/bin /opt/cni 2>/dev/null
  grep -qx cni-conf "$HOST_MARK" || rmdir /etc/cni/net.d /etc/cni 2>/dev/null
  rm -f "$HOST_MARK"
}

stop_standin() { # NAME: the stand-in is part of "the supervisor" for the fault and down steps
  local f=$E2E_DIR/$1/cri.pid
  [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null
  rm -f "$f" "$E2E_DIR/$1/state/cri.sock"
}

# cluster_cleanup_hook: the sourcing script's own cleanup, run first (optional).
cleanup() {
  log "cleanup"
  if declare -F cluster_cleanup_hook >/dev/null; then cluster_cleanup_hook; fi
  if [ -d "$E2E_DIR/worker" ] && ip netns list | grep -qw "$NETNS"; then
    [ -e "$E2E_DIR/worker/mnt" ] && kw down --purge >/dev/null 2>&1
  fi
  [ -d "$M_ROOT" ] && km down --purge >/dev/null 2>&1
  stop_standin master; stop_standin worker
  local left; left=$(our_pids)
  if [ -n "$left" ]; then
    echo "FINDING processes left after kboot down --purge (killed by e2e cleanup): $(for p in $left; do tr '\0' ' ' < "/proc/$p/cmdline" | cut -c1-80; echo ';'; done | tr -d '\n')" | tee -a "$RESULTS" >&2
    # shellcheck disable=SC2086
    kill -9 $left 2>/dev/null
  fi
  host_restore
  if [ -f "$E2E_DIR/worker/holder.pid" ]; then
    kill "$(cat "$E2E_DIR/worker/holder.pid")" 2>/dev/null; rm -f "$E2E_DIR/worker/holder.pid"
  fi
  ip netns list | grep -qw "$NETNS" && ip netns delete "$NETNS"
  ip link show "$VETH_M" >/dev/null 2>&1 && ip link delete "$VETH_M"
  for d in /sys/fs/cgroup/*/"$W_CGROUP" /sys/fs/cgroup/"$W_CGROUP"; do
    [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  "$HERE/e2e-images.sh" --stop
}

# cluster_net_up: the veth pair and the worker's network namespace.
cluster_net_up() {
  ip link add "$VETH_M" type veth peer name "$VETH_W"
  ip netns add "$NETNS"
  ip link set "$VETH_W" netns "$NETNS"
  ip addr add "$MASTER_IP/24" dev "$VETH_M"; ip link set "$VETH_M" up
  ip -n "$NETNS" addr add "$WORKER_IP/24" dev "$VETH_W"
  ip -n "$NETNS" link set "$VETH_W" up; ip -n "$NETNS" link set lo up
  ip -n "$NETNS" route add default via "$MASTER_IP"
}

# worker_mount_ns: the worker's own filesystem view: a mount namespace (held by a sleeping
# process, entered with nsenter) where /etc/kubernetes, /var/lib/kubelet, /var/log/pods,
# /var/log/containers, /etc/cni/net.d and /run/flannel are private bind mounts, and where each
# cgroup hierarchy is the subtree $W_CGROUP. /run is shared with the host but kboot's sockets
# live in the worker's own --state dir.
worker_mount_ns() {
  ip netns exec "$NETNS" unshare --mount --propagation private env W_CGROUP="$W_CGROUP" sh -c '
  # /run/flannel: each node'"'"'s flanneld writes its own subnet.env there.
  for d in /etc/kubernetes /var/lib/kubelet /var/log/pods /var/log/containers /etc/cni/net.d /run/flannel; do
    mkdir -p "$d" "$E2E_DIR/worker/fs$d"; mount --bind "$E2E_DIR/worker/fs$d" "$d"
  done
  mount --make-rshared /var/lib/kubelet
  # ip netns exec mounted a fresh sysfs without the cgroup hierarchies: mount them again
  # (same hierarchies as the host, libcontainer and the kubelet need them), each one showing
  # only the subtree $W_CGROUP, as a second machine would have its own.
  mount -t tmpfs -o mode=755 cgroup_root /sys/fs/cgroup
  while read -r dev mnt type opts _; do
    case $type in cgroup|cgroup2)
      mkdir -p "$mnt"; mount -t "$type" -o "$opts" "$dev" "$mnt"
      mkdir -p "$mnt/$W_CGROUP"
      case ,$opts, in *,cpuset,*)
        cat "$mnt/cpuset.cpus" > "$mnt/$W_CGROUP/cpuset.cpus"
        cat "$mnt/cpuset.mems" > "$mnt/$W_CGROUP/cpuset.mems";;
      esac
      mount --bind "$mnt/$W_CGROUP" "$mnt";;
    esac
  done < /proc/1/mounts
  for l in /proc/1/root/sys/fs/cgroup/*; do
    [ -L "$l" ] && ln -sfn "$(readlink "$l")" "/sys/fs/cgroup/${l##*/}"
  done
  exec sleep infinity' &
  # ip netns exec, unshare and sh all exec: $! ends up being the sleep holding the namespace.
  echo $! > "$E2E_DIR/worker/holder.pid"
  ln -sfn "/proc/$!/ns/mnt" "$E2E_DIR/worker/mnt"
  wait_for 10 "worker mount namespace" sh -c "nsenter --mount='$E2E_DIR/worker/mnt' true"
}

# worker_join [EXTRA ARGS...]: `kboot run worker` with the join line the master printed, in
# the worker's namespaces; its output in $E2E_DIR/worker/run.out.
worker_join() {
  local join a args=()
  join=$(grep -oE 'kboot run worker .*' "$E2E_DIR/master/run.out" "$E2E_DIR/master/run.err" | head -n1 | sed 's/^[^:]*://')
  [ -n "$join" ] || { log "the master printed no join command"; return 1; }
  cp "$M_ROOT/pki/ca.crt" "$E2E_DIR/worker/ca.crt"
  local extra=("$@")
  # shellcheck disable=SC2086 # the join line is split into its arguments on purpose
  set -- ${join#kboot run worker }
  # nsenter --mount resets the working directory: give the CA as an absolute path.
  for a in "$@"; do [ "$a" = ca.crt ] && a=$E2E_DIR/worker/ca.crt; args+=("$a"); done; set -- "${args[@]}"
  (cd "$E2E_DIR/worker" && kw run worker "$@" --ip-address "$WORKER_IP" "${NET_ARGS[@]}" --detach --wait-ready --timeout "$READY_TIMEOUT" "${extra[@]}") \
    > "$E2E_DIR/worker/run.out" 2>&1
}

# pod_routes: without flannel (USE_CNI=false) each node's bridge network routes only its own
# pod subnet; add the route each way between the nodes' pod CIDRs (spec.podCIDR), which is what
# the network between two machines would do. Prints the two CIDRs.
pod_routes() {
  local m_cidr w_cidr
  m_cidr=$(kc get node "$MASTER_IP" -o jsonpath='{.spec.podCIDR}')
  w_cidr=$(kc get node "$WORKER_IP" -o jsonpath='{.spec.podCIDR}')
  [ -n "$m_cidr" ] && [ -n "$w_cidr" ] || { log "node pod CIDRs: master '$m_cidr', worker '$w_cidr'"; return 1; }
  ip route replace "$w_cidr" via "$WORKER_IP"
  ip -n "$NETNS" route replace "$m_cidr" via "$MASTER_IP"
  echo "$m_cidr $w_cidr"
}
