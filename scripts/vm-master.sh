#!/usr/bin/env bash
# `kboot run master` in the Debian 12 guest of scripts/vm.sh (cgroup v2, systemd as PID 1, so
# the systemd cgroup driver is detected): node Ready, a busybox Deployment with logs, exec and
# a ClusterIP Service, pods under kubepods.slice, and a pod that reads its own memory limit at
# /sys/fs/cgroup/memory.max. Then `kboot down` and power-off. Prints each step's time.
#
#   sudo scripts/vm-master.sh            # K8S_VERSION (v1.34.4): the guest's config.toml and the component cache
#   sudo KBOOT_VM_REBOOT=1 scripts/vm-master.sh   # then the reboot test, below
#
# The reboot test (KBOOT_VM_REBOOT=1): after the checks, a ConfigMap is created and
# `kboot service install master --now` writes, enables and starts the boot unit (the detached
# supervisor hands the running containers over to the unit's); the guest reboots cleanly on the
# same disk (`vm.sh reboot`: the qcow2 overlay is kept, the share is fresh), and the node must
# post a Ready heartbeat newer than the boot with the ConfigMap still in etcd and the
# Deployment's pod running again. Then `kboot service uninstall` and `kboot down`.
#
# Images: the loopback registry scripts/e2e-images.sh fills ($CACHE/e2e-registry), served
# read-only by a docker-registry of this script's own on 127.0.0.1:$PORT, which the guest
# reaches as 10.0.2.2:$PORT (qemu user networking) through registries.toml mirrors.
# Environment: K8S_VERSION, KBOOT_VM_REGISTRY_PORT (5077), READY_TIMEOUT (40m, TCG is slow),
# KBOOT_VM_MASTER_ARGS (extra `kboot run master` flags, e.g. --cgroup-driver cgroupfs),
# KBOOT_VM_PROFILE (cargo profile of the kboot put in the guest: release, the default, or dev),
# KBOOT_VM_BIN (a kboot binary to put in the guest instead of building one).
# Release: what a node runs. Results and their times: docs/hosts.md.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "vm-master.sh: run as root" >&2; exit 2; }
export PATH="$PATH:${HOME:-/root}/.cargo/bin"
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
CACHE=${KBOOT_VM_CACHE:-/var/cache/kboot-build}
K8S_VERSION=${K8S_VERSION:-v1.34.4}
PORT=${KBOOT_VM_REGISTRY_PORT:-5077}
READY_TIMEOUT=${READY_TIMEOUT:-40m}
RUN=${KBOOT_VM_DIR:-/tmp/kboot-vm}
. scripts/lib/images.sh

[ -d "$CACHE/e2e-registry/data" ] || { echo "vm-master.sh: no $CACHE/e2e-registry: run scripts/e2e-images.sh" >&2; exit 1; }
[ -x "$CACHE/k8s-$K8S_VERSION/bin/kubectl" ] || { echo "vm-master.sh: no kubectl in $CACHE/k8s-$K8S_VERSION/bin" >&2; exit 1; }
PROFILE=${KBOOT_VM_PROFILE:-release}
t0=$(date +%s)
if [ -n "${KBOOT_VM_BIN:-}" ]; then
  bin=$KBOOT_VM_BIN   # another kboot, e.g. an older build to compare with
else
  cargo build --quiet --profile "$PROFILE" --bin kboot
  bin=$TARGET/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")/kboot
fi

# A read-only registry over the shared data: the e2e helpers' own registry may come and go.
mkdir -p "$RUN"
cat > "$RUN/registry.yml" <<EOF
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $CACHE/e2e-registry/data}, maintenance: {readonly: {enabled: true}}, cache: {blobdescriptor: inmemory}}
http: {addr: 127.0.0.1:$PORT, secret: kboot-vm-local}
EOF
docker-registry serve "$RUN/registry.yml" > "$RUN/registry.log" 2>&1 &
reg_pid=$!
cleanup() {
  scripts/vm.sh stop || true
  kill "$reg_pid" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 50); do curl -fsS "http://127.0.0.1:$PORT/v2/" >/dev/null 2>&1 && break; sleep 0.2; done
curl -fsS "http://127.0.0.1:$PORT/v2/" >/dev/null || { echo "vm-master.sh: registry did not start: $RUN/registry.log" >&2; exit 1; }

scripts/vm.sh start
share=$RUN/share
mkdir -p "$share/bin"
objcopy --strip-debug "$bin" "$share/bin/kboot"
cp scripts/lib/e2e-web.yaml "$share/"
echo "vm-master.sh: built and booted in $(( $(date +%s) - t0 )) s"

# Setup: kboot on the PATH, every public registry mirrored to the host's registry.
scripts/vm.sh exec -- "set -e
install -m 0755 /mnt/host/bin/kboot /usr/local/bin/kboot
mkdir -p /etc/kboot
{ for h in registry.k8s.io ghcr.io docker.io quay.io gcr.io; do
    printf '[[registry]]\nhost = \"%s\"\nmirrors = [\"10.0.2.2:$PORT\"]\nfallback = false\n\n' \$h
  done
  printf '[[registry]]\nhost = \"10.0.2.2:$PORT\"\ninsecure = true\n'
} > /etc/kboot/registries.toml
# The version as a user pins it: run, plan and the boot unit all read config.toml.
echo 'k8s_version = \"$K8S_VERSION\"' > /etc/kboot/config.toml
stat -fc 'cgroup fs: %T' /sys/fs/cgroup; echo \"PID 1: \$(cat /proc/1/comm)\"
kboot plan master > /root/plan.yaml
grep -A1 -i 'k8s_version:\|cgroup_driver\|cgroup_unified\|CGROUP_DRIVER' /root/plan.yaml | head -8
echo \"failCgroupV1 in the kubelet's configuration: \$(grep -c failCgroupV1 /root/plan.yaml || true)\""

# The run: a step of its own, so its time is the guest's.
scripts/vm.sh exec -t 3600 -- "start=\$(date +%s); rc=0
kboot run master --detach --wait-ready --timeout $READY_TIMEOUT ${KBOOT_VM_MASTER_ARGS:-} || rc=\$?
echo \"vm-master: run master exit \$rc after \$(( \$(date +%s) - start )) s (guest clock)\"
if [ \$rc != 0 ]; then
  kboot ps || true
  echo '--- the kubelet (warnings and errors, last 40)'; kboot logs kubelet 2>&1 | grep '^[EWF]' | cut -c1-400 | tail -40 || true
  echo '--- the supervisor'; tail -20 /var/lib/kboot/supervisor.log || true
  echo '--- CPU time (s) of the busiest processes'; ps -eo time,comm --sort=-time | head -8 || true
fi
exit \$rc"

# The checks, in the guest. A failed check still lets the reboot test run (more from one boot).
checks_rc=0
scripts/vm.sh exec -t 1800 -- "set -eu
KC=$CACHE/k8s-$K8S_VERSION/bin/kubectl
kboot kubeconfig > /root/admin.conf
kc() { \$KC --kubeconfig /root/admin.conf \"\$@\"; }
failed=0
check() { # WHAT CMD...: one check, reported; a failure fails the step at the end
  local what=\$1; shift
  if \"\$@\"; then echo \"ok: \$what\"; else echo \"FAIL: \$what\"; failed=1; fi; }
wait_for() { # SECS WHAT CMD...
  local end=\$(( \$(date +%s) + \$1 )) what=\$2; shift 2
  until \"\$@\" >/dev/null 2>&1; do [ \$(date +%s) -lt \$end ] || { echo \"FAIL: \$what\"; failed=1; return 0; }; sleep 2; done
  echo \"ok: \$what (\$(( \$(date +%s) - start )) s in)\"; }
start=\$(date +%s)
echo \"kubelet cgroupDriver: \$(grep cgroupDriver /etc/kubernetes/kubelet-config.yaml /var/lib/kubelet/config.yaml 2>/dev/null | head -1)\"
kc get nodes -o wide || true
kubelet_version=\$(kc get nodes -o jsonpath='{.items[0].status.nodeInfo.kubeletVersion}' || true)
check \"the kubelet is $K8S_VERSION (\$kubelet_version)\" [ \"\$kubelet_version\" = $K8S_VERSION ]
kc apply -f /mnt/host/e2e-web.yaml
wait_for 900 'busybox Deployment available' sh -c \"\$KC --kubeconfig /root/admin.conf get deploy e2e-web -o jsonpath='{.status.availableReplicas}' | grep -qx 1\"
pod=\$(kc get pod -l app=e2e-web -o jsonpath='{.items[0].metadata.name}')
check 'kubectl logs' sh -c \"\$KC --kubeconfig /root/admin.conf logs \$pod | grep -q serving\"
check 'kubectl exec' [ \"\$(kc exec \"\$pod\" -- cat /www/index.html || true)\" = \"hello-from-\$pod\" ]
limit=\$(kc exec \"\$pod\" -- cat /sys/fs/cgroup/memory.max || true)
echo \"pod's /sys/fs/cgroup/memory.max: \$limit\"
check 'the pod sees its 64Mi limit in /sys/fs/cgroup/memory.max' [ \"\$limit\" = 67108864 ]
echo \"pod's /sys/fs/cgroup/cpu.max: \$(kc exec \"\$pod\" -- cat /sys/fs/cgroup/cpu.max || true)\"
svc=\$(kc get svc e2e-web -o jsonpath='{.spec.clusterIP}')
# bash's /dev/tcp, not busybox wget: Debian's busybox 1.35 wget segfaults when a connection fails.
get() { timeout 5 bash -c \"exec 3<>/dev/tcp/\$1/\$2 && printf 'GET / HTTP/1.0\\\\r\\\\n\\\\r\\\\n' >&3 && cat <&3\"; }
podip=\$(kc get pod \"\$pod\" -o jsonpath='{.status.podIP}')
svc_answers() { get \"\$svc\" 80 | grep -q \"hello-from-\$pod\"; }
wait_for 300 \"ClusterIP \$svc answers\" svc_answers
if ! svc_answers; then
  echo \"--- ClusterIP diagnostics: the pod \$podip:8080 directly: \$(get \"\$podip\" 8080 | tail -1 || echo no answer)\"
  kc get endpointslices -l kubernetes.io/service-name=e2e-web -o wide || true
  kc -n kube-system get pods -o wide || true
  kc -n kube-system logs \"kube-proxy-\$(kc get nodes -o jsonpath='{.items[0].metadata.name}')\" --tail 25 2>&1 | cut -c1-300 || true
  iptables-save -t nat 2>&1 | grep -E 'e2e-web|^:KUBE|KUBE-SERVICES -d' | head -20 || true
  ip route || true
fi
check 'pods under /sys/fs/cgroup/kubepods.slice' sh -c \"find /sys/fs/cgroup/kubepods.slice -name 'kboot-*.scope' | grep -q .\"
find /sys/fs/cgroup/kubepods.slice -name 'kboot-*.scope' | head -5
systemd-cgls --no-pager -u kubepods.slice | head -20
systemd-cgls --no-pager -u kboot.slice | head -12
echo \"vm-master: checks took \$(( \$(date +%s) - start )) s (guest clock)\"
echo 'CPU time of the busiest processes:'; ps -eo time,comm --sort=-time | head -6
[ \"${KBOOT_VM_REBOOT:-0}\" = 1 ] && exit \$failed
start=\$(date +%s); kboot down >/dev/null; echo \"vm-master: kboot down took \$(( \$(date +%s) - start )) s\"
exit \$failed" || checks_rc=$?

if [ "${KBOOT_VM_REBOOT:-0}" = 1 ]; then
  scripts/vm.sh exec -t 600 -- "set -eu
KC=$CACHE/k8s-$K8S_VERSION/bin/kubectl
\$KC --kubeconfig /root/admin.conf create configmap before-reboot --from-literal=written=\$(date +%s)
etcd_pid() { kboot ps --format json | tr -d ' \\n' | grep -o '\"name\":\"etcd\"[^}]*' | grep -o '\"pid\":[0-9]*'; }
etcd_before=\$(etcd_pid)
# --now, as a user moving a running node to the boot unit: the detached supervisor hands over.
kboot service install master --now ${KBOOT_VM_MASTER_ARGS:-}
sleep 5
etcd_after=\$(etcd_pid)
unit=\$(systemctl is-active kboot.service || true)
if [ \"\$unit\" = active ] && [ -n \"\$etcd_before\" ] && [ \"\$etcd_before\" = \"\$etcd_after\" ]; then
  echo \"ok: kboot.service took the running node over: active, etcd \$etcd_after adopted, not restarted\"
else
  echo \"FAIL: kboot.service \$unit, etcd \$etcd_before before and \$etcd_after after the hand-over\"
  journalctl -u kboot.service --no-pager | tail -15; exit 1
fi
# For the record of the shutdown and the boot: the supervisor logs at info, the journal persists.
mkdir -p /etc/systemd/system/kboot.service.d /var/log/journal
printf '[Service]\\nEnvironment=KBOOT_LOG=info\\n' > /etc/systemd/system/kboot.service.d/log.conf
systemctl daemon-reload; systemd-tmpfiles --create --prefix /var/log/journal; journalctl --flush
systemctl is-enabled kboot.service
grep '^ExecStart' /etc/systemd/system/kboot.service"
  case $READY_TIMEOUT in
    *m) ready_secs=$(( ${READY_TIMEOUT%m} * 60 )) ;;
    *s) ready_secs=${READY_TIMEOUT%s} ;;
    *) ready_secs=$READY_TIMEOUT ;;
  esac
  t1=$(date +%s)
  # A clean shutdown, not a power cut: systemd gives each container scope up to 90 s.
  KBOOT_VM_STOP_WAIT=${KBOOT_VM_STOP_WAIT:-240} scripts/vm.sh reboot
  echo "vm-master.sh: guest rebooted in $(( $(date +%s) - t1 )) s wall"
  # What the shutdown waited for: slow stop jobs, and the processes systemd-shutdown waited
  # on before its SIGKILL (in the runs so far, pod processes that ignore SIGTERM).
  echo "--- what the shutdown waited for (console):"
  grep -a -o -E "A stop job is running for [^(]*|Failed to stop [^.]*|Waiting for process: [^\r]*|Sending SIGKILL to PID [0-9]+ \([^)]*\)" "$RUN/console.prev.log" | sed 's/\x1b\[[0-9;]*m//g' | sort | uniq -c | sort -rn | head -15 || true
  scripts/vm.sh exec -t 3600 -- "set -eu
KC=$CACHE/k8s-$K8S_VERSION/bin/kubectl
kc() { \$KC --request-timeout 20s --kubeconfig /root/admin.conf \"\$@\"; }
boot=\$(date -d \"\$(uptime -s)\" +%s); end=\$(( \$(date +%s) + $ready_secs ))
echo \"kboot.service: \$(systemctl is-active kboot.service) since \$(systemctl show -P ActiveEnterTimestamp kboot.service)\"
ready() { # the node's Ready condition, posted after this boot
  local c; c=\$(kc get node -o jsonpath='{.items[0].status.conditions[?(@.type==\"Ready\")].status} {.items[0].status.conditions[?(@.type==\"Ready\")].lastHeartbeatTime}' 2>/dev/null) || return 1
  [ \"\${c%% *}\" = True ] && [ \"\$(date -d \"\${c#* }\" +%s)\" -gt \"\$boot\" ]; }
until ready; do
  [ \$(date +%s) -lt \$end ] || { echo 'FAIL: the node did not come back Ready'; kboot ps; kboot logs kubelet 2>&1 | grep '^[EWF]' | cut -c1-300 | tail -20; exit 1; }
  sleep 5
done
echo \"ok: node Ready again \$(( \$(date +%s) - boot )) s after boot (guest clock)\"
failed=0
if kc get configmap before-reboot -o jsonpath='{.data.written}' | grep -q .; then echo 'ok: the ConfigMap made before the reboot is still in etcd'; else echo 'FAIL: ConfigMap lost'; failed=1; fi
end=\$(( \$(date +%s) + 900 ))
until kc get deploy e2e-web -o jsonpath='{.status.availableReplicas}' 2>/dev/null | grep -qx 1; do
  [ \$(date +%s) -lt \$end ] || { echo 'FAIL: the Deployment did not come back'; failed=1; break; }; sleep 5; done
[ \$failed = 1 ] || echo \"ok: the Deployment's pod runs again \$(( \$(date +%s) - boot )) s after boot\"
kboot ps
# kboot's own start failures (a restart refused during the shutdown, say), in any run: none expected.
for c in \$(kboot ps --format json | grep -o '\"name\": *\"[^\"]*\"' | cut -d'\"' -f4); do
  if kboot logs \$c 2>&1 | grep '^kboot:' | tail -4 | cut -c1-600 | grep .; then
    echo \"FAIL: \$c failed to start (above)\"; failed=1
  fi
done
echo \"--- boot at \$boot; the containers' last exits (finished_at_ms):\"
for c in etcd kubelet; do echo \"\$c: \$(cat /var/lib/kboot/containers/\$c/exit.json 2>/dev/null)\"; done
echo '--- the supervisor during the shutdown (previous boot), then this boot:'
journalctl -b -1 -u kboot.service --no-pager 2>/dev/null | grep -vE 'pod namespace is gone' | tail -25 | cut -c1-300 || true
journalctl -b -1 --no-pager 2>/dev/null | grep -E 'dbus|kboot-(etcd|kubelet)\\.scope|kboot\\.slice|Reached target' | tail -25 | cut -c1-250 || true
journalctl -b -u kboot.service --no-pager 2>/dev/null | grep -vE 'pod namespace is gone' | head -30 | cut -c1-300 || true
rm -rf /etc/systemd/system/kboot.service.d
kboot service uninstall
start=\$(date +%s); kboot down >/dev/null; echo \"vm-master: kboot down took \$(( \$(date +%s) - start )) s\"
exit \$failed"
fi
echo "vm-master.sh: done in $(( $(date +%s) - t0 )) s wall"
[ "$checks_rc" = 0 ] || { echo "vm-master.sh: a check in the guest failed (FAIL lines above)" >&2; exit 1; }
