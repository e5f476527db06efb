#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need, builds,
# runs the unprivileged tiers and, as root, the privileged tier.
#   sudo scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

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
