#!/usr/bin/env bash
# Install everything the project needs on a fresh Debian machine, idempotently:
# Debian packages (Java for Hail, the anchor tools plink2/PLINK 1.9/GWAMA, OpenSSH, htslib),
# uv, and the Python environment from the committed lock file.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES=(openjdk-17-jre-headless plink2 plink1.9 gwama openssh-server tabix)
missing=()
for package in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
    echo "bootstrap: installing Debian packages: ${missing[*]}"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v uv >/dev/null 2>&1; then
    echo "bootstrap: installing uv"
    python3 -m pip install --quiet "uv==0.13.8"
fi
uv sync --frozen --quiet
