# Sourced by scripts/install and bench/build_llama_server.sh: how llama.cpp is compiled
# on this machine, and the key its cached build is filed under.
#
# llama.cpp's CPU build is native (-march=native). On an Intel CPU with AMX that turns
# on llama.cpp's AMX buffer type, whose matmul crashes on the first decode of the
# llama.cpp we pin (llama.cpp issue 20824). -mno-amx-* keeps every other native feature
# (AVX-512, VNNI, the REPACK layouts) and leaves AMX out; GCC honours an explicit -mno-*
# over what -march=native implies, whatever the order. HEARTH_LLAMA_AMX=1 keeps AMX.
#
# The key covers everything that makes a build unsafe or different elsewhere: the
# version, CMAKE_ARGS, these flags, the compiler, the machine and the CPU's feature
# flags, so a cache or home directory copied to another CPU builds afresh instead of
# running code compiled for instructions that CPU may lack (SIGILL).
#
# Every build has llama.cpp's RPC backend (GGML_RPC: a model's layers on other machines'
# `hearth rpc-worker`; two more source files, seconds of the build), plain TCP:
# RDMA is left out, so a build machine with libibverbs makes the same wheel as one
# without. HEARTH_LLAMA_RPC=0 builds without it.
# Sets: LLAMA_CFLAGS (to add to CFLAGS and CXXFLAGS), LLAMA_CMAKE_ARGS (CMAKE_ARGS with the
# RPC flags) and LLAMA_BUILD_KEY.
# Needs: LLAMA_CPP_VERSION. LLAMA_CPUINFO: where to read the CPU's flags (/proc/cpuinfo).

LLAMA_CFLAGS=""
if [ "$(uname -m)" = x86_64 ] && [ "${HEARTH_LLAMA_AMX:-0}" != 1 ]; then
    LLAMA_CFLAGS="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
fi

LLAMA_CMAKE_ARGS="${CMAKE_ARGS:-}"
if [ "${HEARTH_LLAMA_RPC:-1}" != 0 ]; then
    LLAMA_CMAKE_ARGS="-DGGML_RPC=ON -DGGML_RPC_RDMA=OFF $LLAMA_CMAKE_ARGS"
fi

LLAMA_CPUINFO=${LLAMA_CPUINFO:-/proc/cpuinfo}
llama_cpu_features() {
    if [ -r "$LLAMA_CPUINFO" ]; then
        # x86 says "flags", ARM says "Features"; one line is enough, sorted for stability.
        sed -n 's/^\(flags\|Features\)[[:space:]]*:[[:space:]]*//p' "$LLAMA_CPUINFO" | head -n1 \
            | tr ' ' '\n' | sort -u | tr '\n' ' '
    elif command -v sysctl >/dev/null; then
        sysctl -n machdep.cpu.brand_string machdep.cpu.features machdep.cpu.leaf7_features \
            2>/dev/null | tr '\n' ' '
    fi
}

LLAMA_BUILD_KEY=$(
    {
        echo "$LLAMA_CPP_VERSION"
        echo "$LLAMA_CMAKE_ARGS"
        echo "$LLAMA_CFLAGS ${CFLAGS:-} ${CXXFLAGS:-}"
        uname -sm
        "${CC:-cc}" --version 2>/dev/null | head -n1
        llama_cpu_features
    } | sha1sum | cut -c1-16
)
