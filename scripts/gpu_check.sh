#!/usr/bin/env bash
# Issue 16's GPU check (bench/gpu_check.py) in ONE device call: graph sharing, long contexts,
# speculative identity and speed, throughput against eager and HF, the eager step. Results go to $OUT.
#
#   scripts/gpu_check.sh prepare      # here, once, with network: .gpu_check/ gets the wheels the GPU
#                                     # image lacks (pydantic and its parts) and the default model's
#                                     # config and tokenizer (its 94 MiB weights exceed a call's 64 MiB:
#                                     # the check then runs random weights of the same shape)
#   device run: command "bash scripts/gpu_check.sh", carry [".gpu_check"], timeout_s 540
#   scripts/gpu_check.sh --dry-run    # the same sections here, on the CPU, over a tiny random model
set -euo pipefail
cd "$(dirname "$0")/.."
KIT=.gpu_check
LOCAL_PY=.venv/bin/python

case "${1:-}" in
  prepare)
    mkdir -p "$KIT/wheels" "$KIT/model"
    # The device image's python is 3.12 on x86-64; the versions are this environment's.
    read -r -a pins < <("$LOCAL_PY" -c 'from importlib.metadata import version as v
print(" ".join(f"{n}=={v(n)}" for n in ("pydantic", "pydantic-core", "annotated-types", "typing-inspection")))')
    "$LOCAL_PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      --platform any -d "$KIT/wheels" "${pins[@]}"
    "$LOCAL_PY" -c 'from orchestra.models import load_pretrained
model, tokenizer = load_pretrained("smollm2-135m-instruct", "bfloat16")
model.config.save_pretrained(".gpu_check/model")
tokenizer.save_pretrained(".gpu_check/model")'
    du -sh "$KIT"
    exit 0
    ;;
  --dry-run)
    exec "$LOCAL_PY" bench/gpu_check.py "$@"
    ;;
esac

# On the device machine: its python3 holds torch; the carried wheels and orchestra go to /tmp/site.
PY=python3
SITE=/tmp/site
if compgen -G "$KIT/wheels/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$KIT"/wheels/*.whl
fi
# orchestra as pyproject's package-dir lays it out, linked (no build): orchestra.backends is backends/, ...
mkdir -p "$SITE/orchestra"
for entry in orchestra/*; do ln -sfn "$PWD/$entry" "$SITE/orchestra/"; done
for part in techniques backends search kernels; do ln -sfn "$PWD/$part" "$SITE/orchestra/$part"; done
export PYTHONPATH="$SITE" PYTHONUNBUFFERED=1
model=()
if [ -f "$KIT/model/config.json" ]; then
  model=(--model "$KIT/model")
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
timeout 480 "$PY" bench/gpu_check.py --out "${OUT:-bench/results}" "${model[@]}" "$@"
