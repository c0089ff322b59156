#!/usr/bin/env bash
# Install everything the project needs on a fresh Debian machine, idempotently:
# Debian packages (Java for Hail, the anchor tools plink2/PLINK 1.9/GWAMA, OpenSSH, htslib, and
# g++ for the project's C++ text kernels, Slurm and munge for the Slurm integration tests,
# Chromium for the browser tests), uv, the Python environment from the lock file, and the tool
# venvs whose pins conflict with the lock (gwas-ssf, rocrate-validator, runcrate).
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES=(openjdk-17-jre-headless plink2 plink1.9 gwama openssh-server tabix bcftools g++ slurm-wlm munge chromium)
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

# The GWAS Catalog validator (gwas-ssf) needs Python >= 3.13: its own venv, from pinned hashes.
SSF_REQUIREMENTS=tools/gwas-ssf/requirements.txt
if [ ! -x .venv-ssf/bin/gwas-ssf ] || [ "$SSF_REQUIREMENTS" -nt .venv-ssf/bin/gwas-ssf ]; then
    echo "bootstrap: creating .venv-ssf (gwas-sumstats-tools)"
    SSF_PYTHON=3.13  # uv finds (or fetches) a 3.13; a local interpreter is preferred below
    for candidate in /root/.pyenv/versions/3.13*/bin/python3.13 "$(command -v python3.13 || true)"; do
        if [ -n "$candidate" ] && "$candidate" -c "" 2>/dev/null; then
            SSF_PYTHON=$candidate
            break
        fi
    done
    uv venv --quiet --allow-existing -p "$SSF_PYTHON" .venv-ssf
    uv pip install --quiet --python .venv-ssf/bin/python --require-hashes -r "$SSF_REQUIREMENTS"
    touch .venv-ssf/bin/gwas-ssf
fi

# The RO-Crate validator (roc-validator) pins versions the project cannot take: its own venv too.
ROCV_REQUIREMENTS=tools/roc-validator/requirements.txt
if [ ! -x .venv-rocv/bin/rocrate-validator ] || [ "$ROCV_REQUIREMENTS" -nt .venv-rocv/bin/rocrate-validator ]; then
    echo "bootstrap: creating .venv-rocv (rocrate-validator)"
    uv venv --quiet --allow-existing -p 3.11 .venv-rocv
    uv pip install --quiet --python .venv-rocv/bin/python --require-hashes -r "$ROCV_REQUIREMENTS"
    touch .venv-rocv/bin/rocrate-validator
fi

# runcrate converts a CWL run's CWLProv research object into a Run Crate on the node; its pins
# conflict with the project's too: its own venv.
RUNCRATE_REQUIREMENTS=tools/runcrate/requirements.txt
if [ ! -x .venv-runcrate/bin/runcrate ] || [ "$RUNCRATE_REQUIREMENTS" -nt .venv-runcrate/bin/runcrate ]; then
    echo "bootstrap: creating .venv-runcrate (runcrate)"
    uv venv --quiet --allow-existing -p 3.11 .venv-runcrate
    uv pip install --quiet --python .venv-runcrate/bin/python --require-hashes -r "$RUNCRATE_REQUIREMENTS"
    touch .venv-runcrate/bin/runcrate
fi
