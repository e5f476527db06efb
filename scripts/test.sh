#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need, builds, runs the
# unprivileged tiers and, as root, the privileged tier, then the real-client tiers: critest
# against kboot's CRI, and the end-to-end cluster (scripts/e2e.sh, Kubernetes built from the
# Go module proxy).
#   sudo scripts/test.sh
#
# KBOOT_CRITEST=0 / KBOOT_E2E=0 / KBOOT_CONFORMANCE=0 leave a tier out (said so at the end, never silently).
# KBOOT_TEST_BUDGET_MIN (default 80): the end-to-end tier needs Kubernetes, etcd and CoreDNS
# built from source once (about 30 min on 2 cores; cached in /var/cache/kboot-build after
# that). When the build cannot finish inside this budget, counted from the start of this
# script, the tier is reported NOT RUN with the command to run it by hand, as issue 7 allows;
# KBOOT_E2E=1 makes that an error instead.
# KBOOT_VM (auto|0|1): the cgroup v2 + systemd tier, a Debian guest under qemu TCG
# (scripts/vm-test.sh with the tests that depend on the cgroup layout). It costs about 11 min
# with the guest image cached and 16 min cold (docs/hosts.md); with less budget left it is
# reported NOT RUN, never passed; KBOOT_VM=1 runs it whatever the budget.
set -euo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
K8S_BIN=${KBOOT_BUILD_CACHE:-/var/cache/kboot-build}/k8s-${K8S_VERSION:-v1.34.4}/bin
# The conformance subset's known kboot failures (docs/conformance.md names each with its cause).
CONFORMANCE_CI_SKIP=${CONFORMANCE_CI_SKIP:-}
BUDGET_S=$(( ${KBOOT_TEST_BUDGET_MIN:-80} * 60 ))

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/test.sh: run as root (the privileged tier mounts, creates cgroups and runs containers)" >&2
  exit 2
fi

# Toolchains as rustup and the Go tarball install them, in case the caller's PATH lacks them.
export PATH="$PATH:${HOME:-/root}/.cargo/bin:/usr/local/go/bin"

scripts/install-deps.sh

export CARGO_TERM_COLOR=never
cargo fmt --all -- --check
cargo build --workspace --all-targets --locked
# Every tier, the root-only ones (marked #[ignore = "privileged…"]) included.
KBOOT_PRIVILEGED_TESTS=1 cargo test --workspace --locked -- --include-ignored
# A shipped build has no test-only switch: the feature that runs an image's process as a
# plain host process is on only in what `cargo test` builds (Cargo.toml [features]).
cargo build --release --locked --bin kboot
if grep -q KBOOT_TEST_ONLY_PLAIN_PROCESS "${CARGO_TARGET_DIR:-target}/release/kboot"; then
  echo "scripts/test.sh: the release binary contains the test-only KBOOT_TEST_ONLY_PLAIN_PROCESS switch" >&2
  exit 1
fi

not_run=()
if [ "${KBOOT_CRITEST:-auto}" != 0 ]; then
  echo "== critest (cri-tools' validation suite) against kboot's CRI"
  scripts/critest.sh
else
  not_run+=("critest (KBOOT_CRITEST=0): sudo scripts/critest.sh")
fi

# The end-to-end cluster. Its components come from the cache when built before; otherwise
# they are built now if the budget leaves room for the build and a run (~10 min).
if [ "${KBOOT_E2E:-auto}" != 0 ]; then
  left=$(( BUDGET_S - ($(date +%s) - START) - 600 ))
  echo "== end-to-end: components (build budget ${left}s)"
  if [ "$left" -gt 60 ] && timeout --foreground "$left" scripts/build-k8s.sh; then
    echo "== end-to-end: scripts/e2e.sh (the default bridge pod network)"
    E2E_CRI_STANDIN=0 scripts/e2e.sh
    echo "== end-to-end: E2E_USE_CNI=1 scripts/e2e.sh (flannel, vxlan)"
    E2E_CRI_STANDIN=0 E2E_USE_CNI=1 scripts/e2e.sh
  elif [ "${KBOOT_E2E:-auto}" = 1 ]; then
    echo "scripts/test.sh: the end-to-end components could not be built within the budget" >&2
    exit 1
  else
    not_run+=("end-to-end (components not built within ${KBOOT_TEST_BUDGET_MIN:-80} min): sudo scripts/build-k8s.sh && sudo scripts/e2e.sh")
  fi
else
  not_run+=("end-to-end (KBOOT_E2E=0): sudo scripts/e2e.sh")
fi

# The conformance subset (docs/conformance.md ## CI): Kubernetes' own 140 [NodeConformance]
# [Conformance] specs, in parallel, on the same two-node cluster, minus the known kboot failures
# that page lists with their causes (CONFORMANCE_CI_SKIP, empty today); any failure fails CI.
# KBOOT_CONFORMANCE (auto|0|1), default auto: the tier runs when the budget left holds its
# measured cost and is otherwise reported NOT RUN with its command, never passed. =1 runs it
# whatever the budget and makes NOT RUN (the suite's time running out) an error. The default
# is auto, not 1: the one thing auto forgives is time, so a healthy run on a machine slower
# than the figures below stays green (the tier listed NOT RUN), while a spec failure is red
# under both.
KBOOT_CONFORMANCE=${KBOOT_CONFORMANCE:-auto}
# Costs measured on 2 loaded cores (docs/conformance.md ## CI), with margin:
# CONFORMANCE_BUILD_S: e2e.test, agnhost and ginkgo (build-k8s.sh --only e2e-suite) after the
#   components, build cache cold; 0 when they are cached.
# CONFORMANCE_RUN_S: busybox from Debian's source and the subset's 4 images when not cached,
#   the cluster, the 140 specs and the teardown (conformance.sh with CONFORMANCE_IMAGES=node).
CONFORMANCE_BUILD_S=${KBOOT_CONFORMANCE_BUILD_S:-900}
CONFORMANCE_RUN_S=${KBOOT_CONFORMANCE_RUN_S:-1800}
# What the suite itself may take once the cluster is up: the run's cost minus the images and
# the cluster (about 10 min cold).
CONFORMANCE_SETUP_S=600
CONFORMANCE_CMD="sudo CONFORMANCE_FOCUS='\\[NodeConformance\\]' CONFORMANCE_SKIP='$CONFORMANCE_CI_SKIP' CONFORMANCE_IMAGES=node scripts/conformance.sh"
if [ "$KBOOT_CONFORMANCE" != 0 ] && [ "${KBOOT_E2E:-auto}" != 0 ] && [ -x "$K8S_BIN/kubectl" ]; then
  need=$CONFORMANCE_RUN_S
  [ -x "$K8S_BIN/e2e.test" ] && [ -x "$K8S_BIN/agnhost" ] && [ -x "$K8S_BIN/ginkgo" ] || need=$(( need + CONFORMANCE_BUILD_S ))
  left=$(( BUDGET_S - ($(date +%s) - START) ))
  if [ "$KBOOT_CONFORMANCE" = 1 ] || [ "$left" -ge "$need" ]; then
    echo "== conformance subset: e2e.test, agnhost, ginkgo (needs ~${need}s, ${left}s of the budget left)"
    build_left=$(( left - CONFORMANCE_RUN_S )); [ "$KBOOT_CONFORMANCE" = 1 ] && build_left=0
    rc=0
    timeout --foreground "$build_left" scripts/build-k8s.sh --only e2e-suite || rc=$?
    if [ "$rc" = 0 ]; then
      # The suite's own budget (ginkgo --timeout): what is left after the images and the cluster.
      # Running out reports the specs without a result NOT RUN (exit 3); under =1 that fails.
      run_args=()
      [ "$KBOOT_CONFORMANCE" = 1 ] || run_args=(CONFORMANCE_BUDGET_MIN=$(( (BUDGET_S - ($(date +%s) - START) - CONFORMANCE_SETUP_S) / 60 )))
      echo "== conformance subset: [NodeConformance] [Conformance] specs (${run_args[*]:-no budget: KBOOT_CONFORMANCE=1})"
      env "${run_args[@]}" CONFORMANCE_FOCUS='\[NodeConformance\]' CONFORMANCE_SKIP="$CONFORMANCE_CI_SKIP" \
        CONFORMANCE_IMAGES=node scripts/conformance.sh || rc=$?
      case $rc in
        0) ;;
        3) [ "$KBOOT_CONFORMANCE" = 1 ] && { echo "scripts/test.sh: the conformance subset ran out of time (KBOOT_CONFORMANCE=1)" >&2; exit 1; }
           not_run+=("conformance subset (the budget ran out; the summary lists what did not run): $CONFORMANCE_CMD") ;;
        *) echo "scripts/test.sh: the conformance subset failed (/var/tmp/kboot-conformance/results/summary.txt)" >&2; exit 1 ;;
      esac
    elif [ "$rc" = 124 ] && [ "$KBOOT_CONFORMANCE" != 1 ]; then
      not_run+=("conformance subset (e2e.test not built within the budget): sudo scripts/build-k8s.sh --only e2e-suite && $CONFORMANCE_CMD")
    else
      echo "scripts/test.sh: building the conformance suite failed (build-k8s.sh --only e2e-suite, status $rc)" >&2
      exit 1
    fi
  else
    not_run+=("conformance subset (needs ~${need}s, ${left}s of the ${KBOOT_TEST_BUDGET_MIN:-80} min budget left): $CONFORMANCE_CMD")
  fi
elif [ "$KBOOT_CONFORMANCE" = 0 ]; then
  not_run+=("conformance subset (KBOOT_CONFORMANCE=0): $CONFORMANCE_CMD")
else
  not_run+=("conformance subset (needs the end-to-end components): $CONFORMANCE_CMD")
fi

# The cgroup v2 + systemd tier (this host is cgroup v1; the guest is what current
# distributions are). The tests whose behaviour depends on the cgroup layout.
VM_TESTS=(containers_unprivileged_cannot_open containers_see_their_own_cgroup containers_busybox_runs containers_oom_kill
  cri_update_container_resources cri_crictl_pod_network)
if [ "${KBOOT_VM:-auto}" != 0 ]; then
  ls /var/cache/kboot-build/vm-*/disk.raw >/dev/null 2>&1 && vm_cost=660 || vm_cost=960
  left=$(( BUDGET_S - ($(date +%s) - START) ))
  if [ "${KBOOT_VM:-auto}" = 1 ] || [ "$left" -gt "$vm_cost" ]; then
    echo "== cgroup v2 + systemd: scripts/vm-test.sh (Debian 12 guest, qemu TCG)"
    scripts/vm-test.sh "${VM_TESTS[@]}"
  else
    not_run+=("cgroup v2 VM tier (needs ~${vm_cost}s, ${left}s of the budget left): sudo scripts/vm-test.sh ${VM_TESTS[*]}")
  fi
else
  not_run+=("cgroup v2 VM tier (KBOOT_VM=0): sudo scripts/vm-test.sh ${VM_TESTS[*]}")
fi

echo "scripts/test.sh: passed in $(( $(date +%s) - START )) s"
if [ "${#not_run[@]}" -gt 0 ]; then
  echo "scripts/test.sh: NOT RUN:"
  printf '  %s\n' "${not_run[@]}"
fi
