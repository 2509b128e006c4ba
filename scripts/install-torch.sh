#!/usr/bin/env bash
# Install torch into a virtual environment without ever pulling CUDA wheels onto a CPU-only machine.
#
#   scripts/install-torch.sh [PYTHON]      (default: .venv/bin/python)
#
# torch is not a dependency in pyproject.toml on purpose: an unpinned `torch`
# resolves to the CUDA build on Linux (several GB of nvidia-* wheels). So:
#   - GPU machine (nvidia-smi works): `pip install torch` within the tested range (TORCH_RANGE).
#   - otherwise the CPU build, first match wins:
#       1. torch==2.13.0+cpu       (the local label only ever matches a CPU build)
#       2. torch==2.13.0 from find-links only (--no-index), then its dependencies
#          from the indexes; asking the indexes for torch==2.13.0 itself would get
#          the CUDA build from PyPI
#       3. the newest torch in TORCH_RANGE from the PyTorch CPU index, again torch alone with
#          --no-index so no extra-index-url (from pip config or PIP_EXTRA_INDEX_URL)
#          can offer a newer CUDA build that pip would prefer
# Already-installed versions are kept. Installs go through uv (scripts/uv-install.sh), which
# honours pip's configuration (a local wheel folder in find-links, extra indexes).
set -euo pipefail

PY=${1:-.venv/bin/python}
CPU_VERSION=${TORCH_CPU_VERSION:-2.13.0}
# The torch versions the engine's exactness tests have passed on.
TORCH_RANGE="torch>=2.13,<3"
CPU_INDEX=https://download.pytorch.org/whl/cpu
pip_install() { bash "$(dirname "${BASH_SOURCE[0]}")/uv-install.sh" "$PY" "$@"; }

# A torch wheel installed on its own (--no-deps), then its dependencies from the
# configured indexes: pinned to the installed version, so torch itself is never refetched.
with_dependencies() {
    local version
    version=$("$PY" -c 'import importlib.metadata as m; print(m.version("torch"))')
    pip_install "torch==$version"
}

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    echo "install-torch: GPU found, installing the default (CUDA) torch build"
    pip_install "$TORCH_RANGE"
    exit 0
fi

echo "install-torch: no GPU, installing the CPU build of torch"
if pip_install "torch==${CPU_VERSION}+cpu"; then
    exit 0
fi
echo "install-torch: torch==${CPU_VERSION}+cpu not found; trying torch==${CPU_VERSION} from find-links" >&2
if pip_install --no-deps --no-index "torch==${CPU_VERSION}"; then
    with_dependencies
    exit 0
fi
echo "install-torch: trying the newest torch on ${CPU_INDEX}" >&2
pip_install --no-deps --no-index --find-links "${CPU_INDEX}/torch/" "$TORCH_RANGE"
with_dependencies
