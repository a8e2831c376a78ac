#!/usr/bin/env bash
# Install the Debian packages listed in requirements/apt.txt whose binary is missing (idempotent).
set -euo pipefail
missing=()
while read -r bin pkg; do
  [[ -z "${bin}" || "${bin}" == \#* ]] && continue
  if [[ "${bin}" == /* ]]; then [[ -e "${bin}" ]] || missing+=("${pkg}"); continue; fi
  command -v "${bin}" >/dev/null 2>&1 || [[ -x "/usr/sbin/${bin}" || -x "/usr/bin/${bin}" ]] || missing+=("${pkg}")
done < "$(dirname "$0")/../requirements/apt.txt"
if ((${#missing[@]} == 0)); then exit 0; fi
if [[ "$(id -u)" != 0 ]]; then
  echo "missing Debian packages (run as root or install them): ${missing[*]}" >&2
  exit 0
fi
echo "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
