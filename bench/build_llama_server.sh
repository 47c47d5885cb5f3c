#!/usr/bin/env bash
# Build llama.cpp's own llama-server and llama-batched-bench, the peer that
# `hearth bench` is compared against, from exactly the llama.cpp tree that
# llama-cpp-python (our pinned backend) vendors, so both run the same kernels.
#
# Usage: bench/build_llama_server.sh
# Env:   CMAKE_ARGS (e.g. -DGGML_CUDA=on; every build is llama.cpp-<version>-<key>),
#        JOBS (default 2), LLAMA_CPP_PYTHON_SDIST (path to an already downloaded
#        llama_cpp_python-<version>.tar.gz), XDG_CACHE_HOME.
# Output: ${XDG_CACHE_HOME:-$HOME/.cache}/hearth/llama.cpp-<version>-<key>/bin/
# Does nothing when both binaries are already there.
set -euo pipefail

VERSION=0.3.36
JOBS=${JOBS:-2}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/hearth
# The same compiler flags and build key as hearth's own llama-cpp-python (AMX left out
# on x86-64, the RPC backend in, keyed by CPU, compiler and CMAKE_ARGS), so both run the
# same kernels.
LLAMA_CPP_VERSION=$VERSION
. "$(dirname "$0")/../scripts/llama-cpp-build.sh"
export CFLAGS="${CFLAGS:-} $LLAMA_CFLAGS" CXXFLAGS="${CXXFLAGS:-} $LLAMA_CFLAGS"
ROOT=$CACHE/llama.cpp-$VERSION-$LLAMA_BUILD_KEY
read -ra EXTRA_CMAKE_ARGS <<< "$LLAMA_CMAKE_ARGS"
BIN=$ROOT/bin
TARGETS=(llama-server llama-batched-bench)

if [[ -x $BIN/llama-server && -x $BIN/llama-batched-bench ]]; then
    echo "already built: $BIN"
    exit 0
fi

SDIST=$CACHE/sdist/llama_cpp_python-$VERSION.tar.gz
if [[ ! -f $SDIST ]]; then
    mkdir -p "$CACHE/sdist"
    if [[ -n ${LLAMA_CPP_PYTHON_SDIST:-} ]]; then
        cp "$LLAMA_CPP_PYTHON_SDIST" "$SDIST.part"
    else
        tmp=$(mktemp -d)
        trap 'rm -rf "$tmp"' EXIT
        python3 -m pip download --quiet --no-deps --no-binary :all: \
            --dest "$tmp" "llama-cpp-python==$VERSION"
        cp "$tmp/llama_cpp_python-$VERSION.tar.gz" "$SDIST.part"
    fi
    mv "$SDIST.part" "$SDIST"
fi

SRC=$ROOT/src
if [[ ! -f $SRC/CMakeLists.txt ]]; then
    rm -rf "$SRC" "$SRC.part"
    mkdir -p "$SRC.part"
    tar -xzf "$SDIST" -C "$SRC.part" --strip-components=3 \
        "llama_cpp_python-$VERSION/vendor/llama.cpp"
    mv "$SRC.part" "$SRC"
fi

generator=()
command -v ninja >/dev/null && generator=(-G Ninja)

# Static libraries so the two binaries run from bin/ on their own. The web UI
# is neither built (needs npm) nor downloaded (needs network): the API is all
# the benchmark uses. LLAMA_CURL is deprecated and ignored in this tree; it is
# passed so that an older tree would not pick up libcurl either.
cmake -S "$SRC" -B "$ROOT/build" "${generator[@]}" \
    -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_CURL=OFF \
    -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_COMMON=ON \
    -DLLAMA_BUILD_TOOLS=ON \
    -DLLAMA_BUILD_SERVER=ON \
    -DLLAMA_BUILD_UI=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF \
    -DLLAMA_BUILD_APP=OFF \
    -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF \
    "${EXTRA_CMAKE_ARGS[@]}"

cmake --build "$ROOT/build" --config Release -j "$JOBS" --target "${TARGETS[@]}"

mkdir -p "$BIN"
for t in "${TARGETS[@]}"; do
    install -m 0755 "$ROOT/build/bin/$t" "$BIN/$t"
done
echo "built: $BIN"
"$BIN/llama-server" --version
