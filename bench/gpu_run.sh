#!/usr/bin/env bash
# The measured GPU run, in one command, on a machine with an NVIDIA GPU and CUDA:
#
#   bench/gpu_run.sh
#
# 1. builds llama-cpp-python with CUDA (scripts/install, wheel cached per CMAKE_ARGS)
#    and checks that the build offloads;
# 2. writes random-weight Llama 2 7B and 70B Q4_0 GGUF files (make_random_gguf.py;
#    3.8 GB + 39 GB of disk; kept and reused);
# 3. prints hearth's offload plan for each setup (`hearth info NAME`);
# 4. hearth bench (completions, ignore_eos) at concurrency 1,8,32 for 7B, 1,8 for 70B,
#    and 1 for 70B with gpu_memory_limit = "24GB" (a 4090's share: partial offload);
# 5. llama-batched-bench from the same llama.cpp tree, built with the same CMAKE_ARGS
#    (bench/build_llama_server.sh), on the same files and layer counts.
#
# Env: OUT (results, default .bench/gpu-<UTC time>), MODELS_DIR (default .bench/models),
#      MAKE_RANDOM_GGUF (default shared/tools/make_random_gguf.py, then
#      /work/shared/tools/make_random_gguf.py), PORT (default 8190), JOBS (default nproc).
# Results: $OUT/*.json (hearth bench), $OUT/*.txt (plans, llama-batched-bench), $OUT/run.log.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

OUT=${OUT:-$ROOT/.bench/gpu-$(date -u +%Y%m%dT%H%M%SZ)}
MODELS_DIR=${MODELS_DIR:-$ROOT/.bench/models}
PORT=${PORT:-8190}
export JOBS=${JOBS:-$(nproc)}
export CMAKE_ARGS="-DGGML_CUDA=on"
mkdir -p "$OUT" "$MODELS_DIR"
exec > >(tee -a "$OUT/run.log") 2>&1

if [[ -z ${MAKE_RANDOM_GGUF:-} ]]; then
    for candidate in shared/tools/make_random_gguf.py /work/shared/tools/make_random_gguf.py; do
        [[ -f $candidate ]] && MAKE_RANDOM_GGUF=$candidate && break
    done
fi
[[ -f ${MAKE_RANDOM_GGUF:-} ]] || { echo "gpu_run: make_random_gguf.py not found; set MAKE_RANDOM_GGUF" >&2; exit 1; }
command -v nvidia-smi >/dev/null || { echo "gpu_run: no nvidia-smi: this run needs an NVIDIA GPU" >&2; exit 1; }
command -v nvcc >/dev/null || [[ -x /usr/local/cuda/bin/nvcc ]] || { echo "gpu_run: no nvcc: install the CUDA toolkit" >&2; exit 1; }
export PATH=$PATH:/usr/local/cuda/bin

echo "== machine"
date -u
nvidia-smi --query-gpu=name,memory.total,memory.free,driver_version --format=csv
nproc

echo "== 1. llama-cpp-python with CUDA"
scripts/install --dev
.venv/bin/python -c 'import llama_cpp as ll, sys; ok = ll.llama_supports_gpu_offload(); print("gpu offload:", ok); sys.exit(0 if ok else 1)'

echo "== 2. random-weight models"
M7=$MODELS_DIR/llama-7b-q4_0.gguf
M70=$MODELS_DIR/llama-70b-q4_0.gguf
[[ -f $M7 ]] || .venv/bin/python "$MAKE_RANDOM_GGUF" --preset 7b --quant q4_0 --ctx 32768 -o "$M7"
[[ -f $M70 ]] || .venv/bin/python "$MAKE_RANDOM_GGUF" --preset 70b --quant q4_0 --ctx 32768 -o "$M70"
ls -l "$M7" "$M70"

# name path context max_sequences extra-toml-line
SETUPS=(
    "llama-7b|$M7|32768|32|"
    "llama-70b|$M70|8192|8|"
    "llama-70b-24gb|$M70|8192|8|gpu_memory_limit = \"24GB\""
)
MODELS_TOML=$OUT/models.toml
: > "$MODELS_TOML"
for setup in "${SETUPS[@]}"; do
    IFS='|' read -r name path ctx seqs extra <<< "$setup"
    printf '[models.%s]\npath = "%s"\ncontext_length = %s\nmax_sequences = %s\n%s\n\n' \
        "$name" "$path" "$ctx" "$seqs" "$extra" >> "$MODELS_TOML"
done
HEARTH=(.venv/bin/hearth --models-file "$MODELS_TOML")

echo "== 3. plans"
for setup in "${SETUPS[@]}"; do
    IFS='|' read -r name _ <<< "$setup"
    "${HEARTH[@]}" info "$name" | tee "$OUT/plan-$name.txt"
done
"${HEARTH[@]}" info llama-70b --gpu-memory 24GB | tee "$OUT/plan-llama-70b-hypothetical-24gb.txt"

SERVER_PID=""
stop_server() {
    if [[ -n $SERVER_PID ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
}
trap stop_server EXIT

wait_ready() {
    for _ in $(seq 1 1200); do  # 10 minutes: a 39 GB file loads from a cold disk
        kill -0 "$SERVER_PID" 2>/dev/null || { echo "gpu_run: server exited" >&2; return 1; }
        curl -sf "http://127.0.0.1:$PORT/v1/models" >/dev/null && return 0
        sleep 0.5
    done
    echo "gpu_run: server not ready" >&2
    return 1
}

bench() {  # name concurrency
    echo "== 4. hearth bench $1 at $2"
    "${HEARTH[@]}" serve --model "$1" --port "$PORT" --no-pull > "$OUT/server-$1.log" 2>&1 &
    SERVER_PID=$!
    wait_ready
    nvidia-smi --query-gpu=memory.used --format=csv,noheader | tee "$OUT/gpu-memory-$1.txt"
    .venv/bin/hearth bench --url "http://127.0.0.1:$PORT/v1" --model "$1" \
        --endpoint completions --extra-body '{"ignore_eos": true}' \
        --concurrency "$2" --prompt-tokens 512 --max-tokens 128 --warmup 2 \
        --label "hearth $1" --json "$OUT/hearth-$1.json"
    stop_server
}
bench llama-7b 1,8,32
bench llama-70b 1,8
bench llama-70b-24gb 1

echo "== 5. llama-batched-bench (same llama.cpp, CUDA)"
bash bench/build_llama_server.sh
BIN=$(bash bench/build_llama_server.sh | sed -n 's/^already built: //p')
LAYERS_24GB=$(.venv/bin/python - "$M70" <<'EOF'
import sys
from pathlib import Path
from backends.llamacpp.gguf_header import read_header
from backends.llamacpp.offload import plan
p = plan(read_header(Path(sys.argv[1])), context_length=8192, max_sequences=8,
         gpus=[24 * 10**9])
print(p.gpu_layers)
EOF
)
echo "70B at 24 GB: n_gpu_layers $LAYERS_24GB (hearth's plan)"
BB=("$BIN/llama-batched-bench" -npp 512 -ntg 128 -b 2048 -ub 512 -kvu)
"${BB[@]}" -m "$M7" -c 32768 -ngl 99 -npl 1,8,32 | tee "$OUT/batched-bench-llama-7b.txt"
"${BB[@]}" -m "$M70" -c 8192 -ngl 99 -npl 1,8 | tee "$OUT/batched-bench-llama-70b.txt"
"${BB[@]}" -m "$M70" -c 8192 -ngl "$LAYERS_24GB" -npl 1 | tee "$OUT/batched-bench-llama-70b-24gb.txt"

echo "== done: $OUT"
