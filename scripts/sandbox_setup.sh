#!/usr/bin/env bash
# One-time sandbox set-up (idempotent): the debootstrapped Debian root filesystem the Docker image is imported from,
# cached under .cache/sandbox-rootfs. Needs root and the Debian packages from requirements/apt.txt (debootstrap).
# Without it the Docker test fixture builds the same cache on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -x .cache/sandbox-rootfs/usr/bin/python3 ]]; then exit 0; fi
if [[ "$(id -u)" != 0 ]]; then
  echo "sandbox_setup: debootstrap needs root; the Docker sandbox tests will report that they cannot run" >&2
  exit 0
fi
echo "sandbox_setup: building .cache/sandbox-rootfs with debootstrap (one time, a few minutes)"
.venv/bin/python -m slime_rl.sandboxes.rootfs
