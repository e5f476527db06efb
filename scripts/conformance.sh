#!/usr/bin/env bash
# Kubernetes conformance, offline (issue 13; docs/conformance.md): the upstream e2e suite's
# [Conformance] tests against a two-node kboot cluster. Run as root:
#
#   sudo scripts/conformance.sh                     # every [Conformance] test, [Serial] ones last
#   sudo CONFORMANCE_FOCUS='\[NodeConformance\]' scripts/conformance.sh   # a part of it
#   sudo scripts/conformance.sh --clean             # only the cleanup (after CONFORMANCE_KEEP=1)
#
# Environment:
#   CONFORMANCE_FOCUS     ginkgo focus regex, ANDed with [Conformance] (default: all of it)
#   CONFORMANCE_SKIP      ginkgo skip regex (default: none, as certified-conformance mode)
#   CONFORMANCE_PROCS     parallel ginkgo processes (default 4); [Serial] specs run last, alone
#   CONFORMANCE_BUDGET_MIN  minutes for the suite itself (default 240): when it runs out, the
#                         specs not finished are reported NOT RUN and the exit status is 3
#   CONFORMANCE_RESULTS   results directory (default /var/tmp/kboot-conformance/results)
#   CONFORMANCE_IMAGES=node  build only the images (and Go builds) the [NodeConformance] subset
#                         pulls (scripts/conformance-images.sh; CI's tier); default all
#   CONFORMANCE_KEEP=1    leave the cluster up afterwards
#   E2E_USE_CNI=1         flannel (vxlan) as the pod network instead of kboot's bridge
#
# The cluster is scripts/e2e.sh's (scripts/lib/cluster.sh): the master on the host, the worker
# in a network namespace with its own mount namespace (10.213.0.1 / 10.213.0.2 over a veth
# pair), both schedulable; images from scripts/e2e-images.sh and scripts/conformance-images.sh
# on the loopback registry, which the worker reaches through a second registry process on its
# own loopback serving the same storage. The script holds /tmp/kboot-host-cluster.lock (one
# cluster per host) from start to cleanup.
#
# Results: $CONFORMANCE_RESULTS/{junit.xml,e2e.log,summary.txt,cluster.txt,*-kubelet.log}.
# Exit: 0 every spec run passed, 1 a spec failed or the cluster did not come up, 3 the budget ran out.
set -uo pipefail

LOCK=/tmp/kboot-host-cluster.lock
# bash reads a script as it runs it: run from a copy (editing this file mid-run is safe), under the lock.
if [ -z "${CONFORMANCE_HERE:-}" ]; then
  [ "$(id -u)" = 0 ] || { echo "conformance: run as root" >&2; exit 2; }
  copy=$(mktemp /tmp/kboot-conformance-script.XXXXXX)
  cp "$0" "$copy"
  here=$(cd "$(dirname "$0")" && pwd)
  # A caller that runs this under `flock $LOCK …` already holds the lock (an inherited fd):
  # taking it again would wait forever.
  for fd in /proc/$$/fd/*; do
    if [ "$(readlink "$fd")" = "$LOCK" ]; then
      CONFORMANCE_HERE=$here exec bash -c 'trap "rm -f \"$0\"" EXIT; bash "$0" "$@"' "$copy" "$@"
    fi
  done
  flock -n "$LOCK" true || echo "conformance: waiting for $LOCK (another kboot cluster runs on this host)" >&2
  CONFORMANCE_HERE=$here exec flock "$LOCK" bash -c 'trap "rm -f \"$0\"" EXIT; bash "$0" "$@"' "$copy" "$@"
fi
HERE=$CONFORMANCE_HERE
REPO=$(dirname "$HERE")
export E2E_DIR=${CONFORMANCE_DIR:-/var/tmp/kboot-conformance}
. "$HERE/lib/cluster.sh"
. "$HERE/lib/images.sh"   # img_registry_config for the worker's registry
OUT=${CONFORMANCE_RESULTS:-$E2E_DIR/results}
RESULTS=$OUT/cluster.txt
BIN=$CACHE/k8s-$K8S_VERSION/bin
FOCUS=${CONFORMANCE_FOCUS:-}
SKIP=${CONFORMANCE_SKIP:-}
PROCS=${CONFORMANCE_PROCS:-4}
BUDGET_S=$(( ${CONFORMANCE_BUDGET_MIN:-240} * 60 ))
REG_PORT=${E2E_REGISTRY_PORT:-5055}
log() { echo "conformance: $*" >&2; }
# Each step with the seconds since the script started (where a run's time goes: docs/conformance.md).
T_START=$(date +%s)
step() { echo "OK $* (+$(( $(date +%s) - T_START )) s)" | tee -a "$RESULTS" >&2; }

# The worker's registry: the same storage as the host's, on the worker's own loopback.
cluster_cleanup_hook() {
  local f=$E2E_DIR/worker/registry.pid
  [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null
  rm -f "$f"
}
setup_fail() {
  echo "FAIL $*" | tee -a "$RESULTS" >&2
  diagnose
  [ "${CONFORMANCE_KEEP:-0}" = 1 ] || cleanup
  exit 1
}
if [ "${1:-}" = "--clean" ]; then RESULTS=/dev/null; cleanup; exit 0; fi

# --- builds and images -----------------------------------------------------------------------
mkdir -p "$E2E_DIR"
cleanup 2>/dev/null
rm -rf "$OUT"; mkdir -p "$OUT"
: > "$RESULTS"
echo "# kboot conformance $(date -u +%FT%TZ) $(git -C "$REPO" rev-parse --short HEAD)" >> "$RESULTS"
# The node subset (CONFORMANCE_IMAGES=node) needs no sample API server (9 min cold).
export CONFORMANCE_IMAGES=${CONFORMANCE_IMAGES:-all}
build_part=e2e; [ "$CONFORMANCE_IMAGES" = node ] && build_part=e2e-suite
"$HERE/build-k8s.sh" --only "$build_part" "$K8S_VERSION" >&2 || { log "e2e build failed"; exit 1; }
"$HERE/e2e-images.sh" >&2 || { log "images failed"; exit 1; }
"$HERE/conformance-images.sh" >&2 || { log "conformance images failed"; "$HERE/e2e-images.sh" --stop; exit 1; }
step "builds and images ready (CONFORMANCE_IMAGES=$CONFORMANCE_IMAGES)"
host_preflight
rm -rf "$E2E_DIR/master" "$E2E_DIR/worker" "$KUBECONFIG_FILE"
mkdir -p "$E2E_DIR/master" "$E2E_DIR/worker"
trap 'log "interrupted"; [ "${CONFORMANCE_KEEP:-0}" = 1 ] || cleanup; exit 130' INT TERM

# --- the cluster -----------------------------------------------------------------------------
cluster_net_up
log "master: kboot run master --detach --wait-ready"
km run master --detach --wait-ready --timeout "$READY_TIMEOUT" --ip-address "$MASTER_IP" "${NET_ARGS[@]}" \
  > "$E2E_DIR/master/run.out" 2> "$E2E_DIR/master/run.err" || setup_fail "kboot run master: $(tail -n3 "$E2E_DIR/master/run.err")"
km kubeconfig > "$KUBECONFIG_FILE" || setup_fail "kboot kubeconfig"
step "master up"

worker_mount_ns || setup_fail "worker mount namespace"
img_registry_config "$E2E_DIR/worker/registry.yml" "127.0.0.1:$REG_PORT" "$CACHE/e2e-registry/data"
ip netns exec "$NETNS" docker-registry serve "$E2E_DIR/worker/registry.yml" > "$E2E_DIR/worker/registry.log" 2>&1 &
echo $! > "$E2E_DIR/worker/registry.pid"
wait_for 10 "the worker's registry" ip netns exec "$NETNS" curl -fsS "http://127.0.0.1:$REG_PORT/v2/" || setup_fail "the worker's registry ($E2E_DIR/worker/registry.log)"
log "worker: kboot run worker in netns $NETNS"
worker_join || setup_fail "kboot run worker: $(tail -n5 "$E2E_DIR/worker/run.out")"
step "worker joined"
if [ "$USE_CNI" = true ]; then
  wait_for 120 "flanneld on the master" flannel_running /run/flannel/subnet.env km || setup_fail "flanneld on the master"
  wait_for 120 "flanneld on the worker" flannel_running "$E2E_DIR/worker/fs/run/flannel/subnet.env" kw || setup_fail "flanneld on the worker"
  step "flanneld on both nodes"
else
  cidrs=$(wait_for 60 "pod CIDRs" pod_routes >/dev/null && pod_routes) || setup_fail "routes between the pod CIDRs"
  step "routes between the pod CIDRs $cidrs"
fi

# What the suite needs before its first test (it waits for the same, but fails after 30 min
# instead of saying why): both nodes Ready and untainted, every kube-system pod Ready.
nodes_ready() {
  kc get nodes -o json | python3 -c '
import json, sys
nodes = json.load(sys.stdin)["items"]
ok = [n for n in nodes
      if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])
      and not any(t["effect"] in ("NoSchedule", "NoExecute") for t in n["spec"].get("taints") or [])
      and not n["spec"].get("unschedulable")]
sys.exit(0 if len(ok) >= 2 else 1)'
}
system_pods_ready() {
  kc -n kube-system get pods -o json | python3 -c '
import json, sys
pods = json.load(sys.stdin)["items"]
bad = [p["metadata"]["name"] for p in pods if p["status"].get("phase") != "Succeeded"
       and not any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or [])]
print(" ".join(bad)); sys.exit(1 if bad or not pods else 0)'
}
wait_for 180 "two Ready, untainted, schedulable nodes" nodes_ready \
  || setup_fail "two Ready untainted nodes: $(kc get nodes -o custom-columns=NAME:.metadata.name,TAINTS:.spec.taints,READY:.status.conditions[-1].status --no-headers 2>&1 | tr '\n' ';')"
step "two Ready, untainted, schedulable nodes"
wait_for 300 "every kube-system pod Ready" system_pods_ready || setup_fail "kube-system pods not Ready: $(system_pods_ready)"
step "every kube-system pod Ready"

# Cluster DNS from a pod on each node (the DNS tests run on both), with the suite's busybox.
busybox=$(grep -E '/busybox:' "$E2E_DIR/images.txt" | grep ' built ' | head -n1 | cut -d' ' -f1)
for node in "$MASTER_IP" "$WORKER_IP"; do
  name=dns-check-${node//./-}
  kc run "$name" --image="$busybox" --restart=Never --overrides="{\"spec\":{\"nodeName\":\"$node\"}}" -- \
    sh -c 'nslookup kubernetes.default.svc.cluster.local. | grep -qE "^Address:[[:space:]]+10\.0\.0\.1$"' >/dev/null \
    || setup_fail "create the DNS check pod on $node"
done
for node in "$MASTER_IP" "$WORKER_IP"; do
  name=dns-check-${node//./-}
  wait_for 120 "DNS from a pod on $node" sh -c "'$KUBECTL_BIN' --kubeconfig '$KUBECONFIG_FILE' get pod $name -o jsonpath='{.status.phase}' | grep -qx Succeeded" \
    || setup_fail "cluster DNS from a pod on $node (phase $(kc get pod "$name" -o jsonpath='{.status.phase}'); $(kc logs "$name" 2>&1 | tail -n3))"
  kc delete pod "$name" --wait=false >/dev/null
done
step "CoreDNS answers pods on both nodes"

# --- the suite -------------------------------------------------------------------------------
export KUBE_TEST_REPO_LIST=$E2E_DIR/repo-list.yaml KUBECONFIG=$KUBECONFIG_FILE PATH=$BIN:$PATH
cd "$OUT" || setup_fail "cd $OUT"
# The label filter selects [Conformance]; a focus or skip narrows it further (AND).
filters=(--label-filter=Conformance)
[ -n "$FOCUS" ] && filters+=(--focus="$FOCUS")
[ -n "$SKIP" ] && filters+=(--skip="$SKIP")
test_args=(-- --provider=skeleton --kubeconfig="$KUBECONFIG_FILE" --kubectl-path="$KUBECTL_BIN"
           --report-dir="$OUT" --disable-log-dump)
cmd=(ginkgo --procs="$PROCS" --timeout="${BUDGET_S}s" --no-color --output-dir="$OUT" --junit-report=junit.xml
     "${filters[@]}" "$BIN/e2e.test" "${test_args[@]}")
printf '%q ' "${cmd[@]}" > "$OUT/command.txt"; echo >> "$OUT/command.txt"
# The specs the filters select (a dry run): what is neither passed, failed nor skipped at the
# end was not run (budget), and is reported so.
ginkgo --dry-run --no-color --output-dir="$OUT" --junit-report=planned.xml "${filters[@]}" "$BIN/e2e.test" \
  "${test_args[@]}" > "$OUT/dry-run.log" 2>&1 || setup_fail "ginkgo --dry-run: $(tail -n5 "$OUT/dry-run.log")"
log "running: $(cat "$OUT/command.txt")"
t0=$(date +%s)
# ginkgo --timeout ends the suite and reports what was interrupted; the outer timeout is a
# backstop for a hung process (2 minutes later).
timeout --foreground -k 30 $(( BUDGET_S + 120 )) "${cmd[@]}" > "$OUT/e2e.log" 2>&1
rc=$?
secs=$(( $(date +%s) - t0 ))
for n in master worker; do
  k=km; [ $n = worker ] && k=kw
  $k logs kubelet > "$OUT/$n-kubelet.log" 2>&1
  cp "$E2E_DIR/$n/state/supervisor.log" "$OUT/$n-supervisor.log" 2>/dev/null
done
kc get pods -A -o wide > "$OUT/pods-after.txt" 2>&1

# --- summary ---------------------------------------------------------------------------------
budget_hit=0
if [ $rc = 124 ] || [ $rc = 137 ] || grep -qE 'Interrupted by Timeout|Ginkgo timed out|suite timeout' "$OUT/e2e.log"; then budget_hit=1; fi
python3 - "$OUT/planned.xml" "$OUT/junit.xml" "$OUT/e2e.log" "$secs" > "$OUT/summary.txt" <<'PY'
import re, sys, xml.etree.ElementTree as ET
planned_f, junit_f, log_f, secs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

def cases(path):
    try:
        return [tc for tc in ET.parse(path).getroot().iter("testcase")]
    except (OSError, ET.ParseError) as e:
        print(f"no JUnit report {path} ({e})")
        return []

def is_setup(name):
    return re.match(r"\[(Synchronized|Report)?(Before|After)Suite\]|\[DeferCleanup", name) is not None

# A dry run reports the selected specs as passed, the rest as skipped with the bare message "skipped".
planned = [tc.get("name") for tc in cases(planned_f) if tc.find("skipped") is None and not is_setup(tc.get("name", ""))]
passed, failed, skipped, setup_failed = [], [], [], []
for tc in cases(junit_f):
    name = tc.get("name", "")
    bad = tc.find("failure") if tc.find("failure") is not None else tc.find("error")
    if is_setup(name):
        if bad is not None:
            setup_failed.append((name, (bad.get("message") or "")[:300]))
        continue
    sk = tc.find("skipped")
    if bad is not None:
        failed.append((name, (bad.get("message") or "").strip().replace("\n", " ")[:300], float(tc.get("time") or 0)))
    elif sk is not None:
        if sk.get("message", "skipped") != "skipped":   # Skip(reason) at run time; bare "skipped": not run
            skipped.append((name, sk.get("message")[len("skipped - "):][:300]))
    else:
        passed.append(name)
done = set(passed) | {f[0] for f in failed} | {s[0] for s in skipped}
notrun = [n for n in planned if n not in done]
m = re.findall(r"Ran (\d+) of (\d+) Specs", open(log_f, errors="replace").read())
print(f"Ran {m[-1][0]} of {m[-1][1]} Specs" if m else "Ran ? of ? Specs (no ginkgo summary in the log)")
print(f"selected by the filters: {len(planned)}")
print("| passed | failed | skipped | not run | time |")
print("|---|---|---|---|---|")
print(f"| {len(passed)} | {len(failed)} | {len(skipped)} | {len(notrun)} | {secs // 60} min {secs % 60} s |")
for n, msg in setup_failed:
    print(f"FAILED {n}: {msg}")
for n, msg, t in failed:
    print(f"FAILED {n} ({t:.0f} s): {msg}")
for n, msg in skipped:
    print(f"SKIPPED {n}: {msg}")
for n in notrun:
    print(f"NOT RUN {n}")
sys.exit(1 if failed or setup_failed else (2 if notrun else 0))
PY
failed=$?
cat "$OUT/summary.txt" >&2
[ "${CONFORMANCE_KEEP:-0}" = 1 ] || cleanup
step "done: the suite took $secs s"
if [ $budget_hit = 1 ]; then
  log "NOT RUN: the budget (${CONFORMANCE_BUDGET_MIN:-240} min) ran out before every spec ran; run by hand with a larger CONFORMANCE_BUDGET_MIN: sudo scripts/conformance.sh"
  exit 3
fi
[ $failed = 2 ] && { log "NOT RUN: specs left without a result (see $OUT/summary.txt)"; exit 3; }
[ $failed = 0 ] && [ $rc = 0 ] || { log "failures: $OUT/summary.txt, log $OUT/e2e.log"; exit 1; }
log "passed: $OUT/summary.txt"
