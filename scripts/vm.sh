#!/usr/bin/env bash
# A Debian 12 guest under qemu (TCG) for what this host cannot be: cgroup v2 unified with
# systemd as PID 1. The guest is Debian's own kernel and a root filesystem mmdebstrap builds
# from Debian packages, cached in $CACHE/vm-<hash> and rebuilt only when the package list or
# the guest setup below changes. Commands run in the guest through an agent (a systemd unit)
# that reads step scripts from a 9p share and writes their logs and exit codes back.
#
#   sudo scripts/vm.sh image                 # build (or find) the cached guest image; prints its dir
#   sudo scripts/vm.sh start                 # boot a guest on a fresh overlay disk; waits for the agent
#   sudo scripts/vm.sh exec [-t SECS] -- CMD...   # run CMD (bash -c) in the guest as root
#   sudo scripts/vm.sh exec [-t SECS] FILE   # run a script file in the guest
#   sudo scripts/vm.sh put FILE...           # copy files into the share (the guest sees $VM_SHARE, /mnt/host)
#   sudo scripts/vm.sh reboot                # reboot the guest (same disk), wait for the agent again
#   sudo scripts/vm.sh stop                  # power the guest off (killed after 60 s)
#   sudo scripts/vm.sh run FILE...           # start, exec each FILE, stop: one test run
#
# In the guest: /mnt/host is the share ($RUN/share on the host, read-write), /var/cache/kboot-build
# is the host's component cache (read-only). A step runs as root in the agent's unit, from
# /mnt/host; its stdout+stderr stream to the caller; a failed step prints the tail of the guest's
# journal. User-mode networking only: the host is 10.0.2.2 from the guest.
#
# Environment: KBOOT_VM_DIR (default /tmp/kboot-vm: share, overlay disk, console log, qemu pid),
# KBOOT_VM_MEM (MiB, 4096), KBOOT_VM_SMP (2), KBOOT_VM_DISK_GB (16, sparse),
# KBOOT_VM_BOOT_TIMEOUT (300 s), KBOOT_VM_STOP_WAIT (60 s: how long `stop` and `reboot` wait for
# the guest to power off before killing qemu; a reboot keeps that console as console.prev.log). Uses /dev/kvm only when KBOOT_VM_KVM=1 (it does not work on
# these machines: the notes in docs/hosts.md).
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${KBOOT_VM_CACHE:-/var/cache/kboot-build}
RUN=${KBOOT_VM_DIR:-/tmp/kboot-vm}
MEM=${KBOOT_VM_MEM:-4096}
SMP=${KBOOT_VM_SMP:-2}
DISK_GB=${KBOOT_VM_DISK_GB:-16}
BOOT_TIMEOUT=${KBOOT_VM_BOOT_TIMEOUT:-300}

# What the guest is made of. kboot's runtime needs (iptables, the CNI plugins, libseccomp, mount
# tools), what its privileged tests use (busybox-static, docker-registry, etcd; skopeo for
# scripts/vm-critest.sh's image pushes) and dbus for
# systemd's cgroup API.
PACKAGES=(
  systemd systemd-sysv udev dbus kmod linux-image-amd64
  iproute2 iptables conntrack ethtool socat containernetworking-plugins ca-certificates
  procps util-linux mount e2fsprogs libseccomp2
  busybox-static docker-registry etcd-server etcd-client skopeo
)

# The agent: mounts the shares, then runs each steps/NNN.sh once, in order, writing NNN.log,
# NNN.rc (last, atomically) and on failure NNN.journal. Polls: 9p has no change notification.
read -r -d '' AGENT <<'SH' || true
#!/bin/sh
mkdir -p /mnt/host /var/cache/kboot-build
mount -t 9p -o trans=virtio,version=9p2000.L,msize=1048576 kboot /mnt/host || exit 1
mount -t 9p -o trans=virtio,version=9p2000.L,msize=1048576,ro kbootcache /var/cache/kboot-build 2>/dev/null || true
cut -d' ' -f1 /proc/uptime > /mnt/host/ready.tmp && mv /mnt/host/ready.tmp /mnt/host/ready
mkdir -p /mnt/host/steps
while :; do
  for s in /mnt/host/steps/*.sh; do
    [ -e "$s" ] || continue
    n=${s%.sh}
    [ -e "$n.started" ] && continue
    : > "$n.started"
    t0=$(cut -d' ' -f1 /proc/uptime)
    (cd /mnt/host && exec bash "$s") > "$n.log" 2>&1 < /dev/null
    rc=$?
    t1=$(cut -d' ' -f1 /proc/uptime)
    [ "$rc" -eq 0 ] || journalctl -b --no-pager -n 80 > "$n.journal" 2>&1
    echo "$t0 $t1" > "$n.time"
    echo "$rc" > "$n.rc.tmp" && mv "$n.rc.tmp" "$n.rc"
  done
  if [ -e /mnt/host/poweroff ]; then rm -f /mnt/host/poweroff /mnt/host/ready; sync; systemctl poweroff --no-block; exit 0; fi
  if [ -e /mnt/host/reboot ]; then rm -f /mnt/host/reboot /mnt/host/ready; sync; systemctl reboot --no-block; exit 0; fi
  sleep 0.3
done
SH

read -r -d '' UNIT <<'INI' || true
[Unit]
Description=kboot VM test agent (scripts/vm.sh)
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
ExecStart=/usr/local/sbin/kboot-vm-agent
# Steps start kboot, which manages its own cgroups: stopping the agent must not kill them early.
KillMode=process

[Install]
WantedBy=multi-user.target
INI

read -r -d '' NETWORK <<'INI' || true
[Match]
Name=en* eth*

[Network]
DHCP=ipv4
INI

KEY=$(printf '%s\n' "${PACKAGES[@]}" "$AGENT" "$UNIT" "$NETWORK" "setup-v1" | sha256sum | cut -c1-12)
IMG=$CACHE/vm-$KEY
SHARE=$RUN/share

log() { echo "vm.sh: $*" >&2; }
die() { echo "vm.sh: $*" >&2; exit 1; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

need_root() { [ "$(id -u)" -eq 0 ] || die "run as root (mmdebstrap builds the rootfs as root; qemu shares files with the guest's owners)"; }

need_tools() {
  local missing=()
  command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
  command -v qemu-img >/dev/null || missing+=(qemu-utils)
  command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
  command -v mkfs.ext4 >/dev/null || missing+=(e2fsprogs)
  ((${#missing[@]} == 0)) || die "missing ${missing[*]}: apt-get install -y --no-install-recommends ${missing[*]} (scripts/install-deps.sh installs them)"
}

# The guest image: disk.raw (ext4, sparse), vmlinuz and initrd.img from the guest's own kernel
# package, packages.txt (what was installed, with versions).
cmd_image() {
  need_root
  need_tools
  if [ -f "$IMG/disk.raw" ]; then echo "$IMG"; return; fi
  mkdir -p "$CACHE"
  local tmp t0 hook
  tmp=$(mktemp -d "$CACHE/vm-build.XXXXXX")
  t0=$(now)
  log "building the guest image $IMG (mmdebstrap, ${#PACKAGES[@]} packages)"
  # The host's apt sources, so the guest comes from wherever this host's packages come from.
  local sources=()
  [ -f /etc/apt/sources.list.d/debian.sources ] && sources=(/etc/apt/sources.list.d/debian.sources)
  [ -s /etc/apt/sources.list ] && sources+=(/etc/apt/sources.list)
  printf '%s\n' "$AGENT" > "$tmp/agent"
  printf '%s\n' "$UNIT" > "$tmp/agent.service"
  printf '%s\n' "$NETWORK" > "$tmp/10-dhcp.network"
  hook=$(cat <<HOOK
set -e
echo kboot-vm > "\$1/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 kboot-vm\n' > "\$1/etc/hosts"
echo '/dev/vda / ext4 rw,relatime 0 1' > "\$1/etc/fstab"
echo 'nameserver 10.0.2.3' > "\$1/etc/resolv.conf"
install -m 0755 $tmp/agent "\$1/usr/local/sbin/kboot-vm-agent"
install -m 0644 $tmp/agent.service "\$1/etc/systemd/system/kboot-vm-agent.service"
install -m 0644 $tmp/10-dhcp.network "\$1/etc/systemd/network/10-dhcp.network"
chroot "\$1" passwd -d root
chroot "\$1" systemctl enable kboot-vm-agent.service systemd-networkd.service
chroot "\$1" systemctl mask docker-registry.service etcd.service apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer
HOOK
)
  mmdebstrap --variant=minbase --include="$(IFS=,; echo "${PACKAGES[*]}")" \
    --customize-hook="$hook" \
    --customize-hook='chroot "$1" dpkg-query -W > "$1/../packages.txt"' \
    bookworm "$tmp/rootfs" "${sources[@]}" > "$tmp/mmdebstrap.log" 2>&1 \
    || { tail -30 "$tmp/mmdebstrap.log" >&2; die "mmdebstrap failed (log: $tmp/mmdebstrap.log)"; }
  local t1
  t1=$(now)
  cp -L "$tmp"/rootfs/boot/vmlinuz-* "$tmp/vmlinuz"
  cp -L "$tmp"/rootfs/boot/initrd.img-* "$tmp/initrd.img"
  mkfs.ext4 -q -L kboot-vm -d "$tmp/rootfs" "$tmp/disk.raw" "${DISK_GB}G" > /dev/null
  rm -rf "$tmp/rootfs" "$tmp/agent" "$tmp/agent.service" "$tmp/10-dhcp.network"
  mv "$tmp" "$IMG"
  log "image built in $(secs "$t0" "$(now)") s (mmdebstrap $(secs "$t0" "$t1") s); $(du -sh --apparent-size "$IMG/disk.raw" | cut -f1) apparent, $(du -sh "$IMG/disk.raw" | cut -f1) used"
  echo "$IMG"
}

running() { [ -f "$RUN/qemu.pid" ] && kill -0 "$(cat "$RUN/qemu.pid")" 2>/dev/null; }

# Waits for the agent's ready file, the guest's uptime when its agent started.
wait_ready() {
  local t0=$1 deadline=$(( $(date +%s) + BOOT_TIMEOUT ))
  while [ ! -s "$SHARE/ready" ]; do
    running || { tail -40 "$RUN/console.log" >&2; die "the guest stopped before its agent started (console: $RUN/console.log)"; }
    [ "$(date +%s)" -lt "$deadline" ] || { tail -40 "$RUN/console.log" >&2; die "no agent after ${BOOT_TIMEOUT}s (console: $RUN/console.log)"; }
    sleep 0.3
  done
  log "guest ready in $(secs "$t0" "$(now)") s wall (agent started at guest uptime $(cat "$SHARE/ready") s)"
}

cmd_start() {
  need_root
  running && die "a guest is already running (pid $(cat "$RUN/qemu.pid")); scripts/vm.sh stop first"
  cmd_image > /dev/null
  local reuse=0
  [ "${1:-}" = --reuse-disk ] && reuse=1
  mkdir -p "$RUN"
  rm -rf "$SHARE"
  mkdir -p "$SHARE/steps"
  if [ "$reuse" = 0 ] || [ ! -f "$RUN/disk.qcow2" ]; then
    rm -f "$RUN/disk.qcow2"
    qemu-img create -q -f qcow2 -b "$IMG/disk.raw" -F raw "$RUN/disk.qcow2"
  fi
  local accel=(-accel tcg,thread=multi)
  [ "${KBOOT_VM_KVM:-0}" = 1 ] && accel=(-accel kvm -cpu host)
  local t0
  t0=$(now)
  # A reboot keeps the shutdown's console (systemd's stop jobs) as console.prev.log.
  if [ "$reuse" = 1 ] && [ -f "$RUN/console.log" ]; then mv "$RUN/console.log" "$RUN/console.prev.log"; fi
  : > "$RUN/console.log"
  nice -n "${KBOOT_VM_NICE:-10}" qemu-system-x86_64 "${accel[@]}" -smp "$SMP" -m "$MEM" \
    -kernel "$IMG/vmlinuz" -initrd "$IMG/initrd.img" \
    -append "console=ttyS0 root=/dev/vda rw systemd.show_status=auto" \
    -drive "file=$RUN/disk.qcow2,format=qcow2,if=virtio,cache=unsafe,discard=unmap" \
    -netdev user,id=n0 -device virtio-net-pci,netdev=n0 \
    -virtfs "local,path=$SHARE,mount_tag=kboot,security_model=passthrough,id=kboot" \
    -virtfs "local,path=$CACHE,mount_tag=kbootcache,security_model=passthrough,readonly=on,id=kbootcache" \
    -display none -serial "file:$RUN/console.log" -monitor none \
    -daemonize -pidfile "$RUN/qemu.pid" -no-reboot
  echo "$t0" > "$RUN/started"
  wait_ready "$t0"
}

# One step: writes steps/NNN.sh, streams NNN.log until NNN.rc appears; returns the step's code.
cmd_exec() {
  need_root
  running || die "no guest running: scripts/vm.sh start first"
  local timeout=1800 script
  while [ $# -gt 0 ]; do
    case $1 in
      -t) timeout=$2; shift 2 ;;
      --) shift; break ;;
      *) break ;;
    esac
  done
  [ $# -gt 0 ] || die "exec: give a command after -- or a script file"
  local n
  n=$(printf '%03d' "$(( $(find "$SHARE/steps" -name '*.sh' | wc -l) + 1 ))")
  local base=$SHARE/steps/$n
  if [ $# -eq 1 ] && [ -f "$1" ]; then
    script=$(cat "$1")
  else
    script="$*"
  fi
  printf 'set -eo pipefail\n%s\n' "$script" > "$base.sh.tmp"
  mv "$base.sh.tmp" "$base.sh"
  local t0 deadline
  t0=$(now)
  deadline=$(( $(date +%s) + timeout ))
  : > "$base.log" 2>/dev/null || true
  tail -n +1 -F "$base.log" 2>/dev/null &
  local tailpid=$!
  while [ ! -f "$base.rc" ]; do
    if ! running; then kill "$tailpid" 2>/dev/null; tail -40 "$RUN/console.log" >&2; die "step $n: the guest stopped"; fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      kill "$tailpid" 2>/dev/null
      die "step $n: no result after ${timeout}s (the guest still runs it; log: $base.log)"
    fi
    sleep 0.3
  done
  sleep 0.3
  kill "$tailpid" 2>/dev/null; wait "$tailpid" 2>/dev/null || true
  local rc
  rc=$(cat "$base.rc")
  read -r g0 g1 < "$base.time"
  log "step $n: exit $rc in $(secs "$t0" "$(now)") s wall ($(secs "$g0" "$g1") s in the guest)"
  if [ "$rc" != 0 ]; then
    echo "vm.sh: step $n failed; the guest's journal ends:" >&2
    tail -40 "$base.journal" >&2 || true
  fi
  return "$rc"
}

cmd_put() {
  running || die "no guest running: scripts/vm.sh start first"
  cp -a "$@" "$SHARE/"
}

cmd_stop() {
  need_root
  if running; then
    local pid t0
    pid=$(cat "$RUN/qemu.pid")
    t0=$(now)
    : > "$SHARE/poweroff"
    local wait_s=${KBOOT_VM_STOP_WAIT:-60}
    for _ in $(seq $(( wait_s * 10 / 3 ))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.3; done
    if kill -0 "$pid" 2>/dev/null; then
      log "the guest did not power off within $wait_s s: killing qemu ($pid)"
      kill "$pid"
    else
      log "guest powered off in $(secs "$t0" "$(now)") s"
    fi
  fi
  rm -f "$RUN/qemu.pid"
}

cmd_reboot() {
  need_root
  running || die "no guest running"
  # -no-reboot makes a guest reboot end qemu; a reboot is a stop and a start on the same disk.
  cmd_stop
  cmd_start --reuse-disk
}

cmd_run() {
  [ $# -gt 0 ] || die "run: give one or more script files"
  cmd_start
  trap cmd_stop EXIT
  local f
  for f in "$@"; do cmd_exec "$f"; done
}

case ${1:-} in
  image) shift; cmd_image "$@" ;;
  start) shift; cmd_start "$@" ;;
  exec) shift; cmd_exec "$@" ;;
  put) shift; cmd_put "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  reboot) shift; cmd_reboot "$@" ;;
  run) shift; cmd_run "$@" ;;
  *) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
