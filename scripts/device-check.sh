#!/usr/bin/env bash
# The whole GPU check of the CUDA backend in one run, for the GPU machine (an H100 / H200 with nvcc, CMake,
# ninja, g++ and python3 with torch / transformers / peft, but no Debian -dev packages and no network):
#   scripts/device-check.sh [OUT_DIR]        (from the repository root; default OUT_DIR device-check-out)
# It needs .device-deps/ beside it (scripts/device-deps.sh, run beforehand on a machine with the packages).
# Steps, each with a time limit, each recorded and the next one run whatever happened:
#   env (GPU, compiler, toolkit and Python versions) → configure (against .device-deps) → build loraplex →
#   build the GPU tests (tests/*/*_gpu_test.cpp) while the demo models are written (1b with 16 rank-16
#   adapters, 8b) → run every GPU test → bench --device cuda on 1b and 8b → transformers + peft: logits
#   against loraplex's, and the peer's generate throughput → OUT_DIR/device-summary.json (figures, goals,
#   pass / fail) and a short table, printed last.
# At most 8 files come back from OUT_DIR: device-summary.json and the logs (env, build, gpu-tests, bench,
# peer, steps), each cut to its last 15 MiB. Exit status 0 only when every step and every goal passed.
# Environment: DEVICE_CHECK_WORK (models and scratch, default /tmp/loraplex-device-check), DEVICE_CHECK_BUILD
# (build tree, default build-device), DEVICE_CHECK_BUDGET (seconds for all steps, default 450),
# DEVICE_CHECK_BUILD_LIMIT (seconds for each build step, default 240),
# LP_CUDA_ARCHITECTURES (default 90), DEVICE_CHECK_MODELS (default "1b 8b"), DEVICE_CHECK_FORCE=1 (go on
# without a GPU, to try the build here: the steps that need one then fail).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
OUT=${1:-device-check-out}
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
WORK=${DEVICE_CHECK_WORK:-/tmp/loraplex-device-check}
BUILD=${DEVICE_CHECK_BUILD:-build-device}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
BUILD_LIMIT=${DEVICE_CHECK_BUILD_LIMIT:-240}
BUDGET=${DEVICE_CHECK_BUDGET:-450}
ARCHS=${LP_CUDA_ARCHITECTURES:-90}
JOBS=$(nproc 2>/dev/null || echo 4)
START=$(date +%s)
mkdir -p "$WORK" || exit 2
STEPS="$WORK/steps.tsv"
: >"$STEPS"
for f in env build gpu-tests bench peer steps; do : >"$OUT/$f.log"; done
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

say() { echo "[device-check +$(($(date +%s) - START))s] $*" | tee -a "$OUT/steps.log"; }
left() { echo $((BUDGET - ($(date +%s) - START))); }

# step NAME LIMIT LOG CMD...: runs CMD with at most LIMIT seconds (less when the budget is nearly spent),
# its output appended to OUT/LOG.log; records "name status seconds rc" in STEPS. Returns CMD's status.
step() {
  local name=$1 limit=$2 log=$OUT/$3.log
  shift 3
  local budget_left
  budget_left=$(left)
  if [ "$budget_left" -lt 10 ]; then
    say "$name: skipped (the ${BUDGET} s budget is spent)"
    printf '%s\tskipped\t0\t-\n' "$name" >>"$STEPS"
    return 125
  fi
  [ "$limit" -gt "$budget_left" ] && limit=$budget_left
  say "$name: start (limit ${limit} s)"
  echo "===== $name: $* (limit ${limit} s)" >>"$log"
  local t0 rc status
  t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
  rc=$?
  if [ $rc -eq 0 ]; then status=ok; elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then status=timeout; else status=failed; fi
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$(($(date +%s) - t0))" "$rc" >>"$STEPS"
  say "$name: $status (rc $rc, $(($(date +%s) - t0)) s)"
  return $rc
}
skip() {  # skip NAME WHY
  printf '%s\tskipped\t0\t-\n' "$1" >>"$STEPS"
  say "$1: skipped ($2)"
}
skip_ok() {  # skip_ok NAME WHY: nothing to do, and that is fine
  printf '%s\tok\t0\t0\n' "$1" >>"$STEPS"
  say "$1: ok ($2)"
}

finish() {
  local rc=0
  python3 "$ROOT/scripts/gpu/summary.py" --work "$WORK" --steps "$STEPS" --out "$OUT/device-summary.json" \
    --seconds "$(($(date +%s) - START))" 2>&1 | tee -a "$OUT/steps.log" || rc=1
  for f in "$OUT"/*.log; do  # the device tool brings back files of at most 16 MiB
    if [ "$(stat -c %s "$f")" -gt $((15 * 1024 * 1024)) ]; then
      tail -c $((15 * 1024 * 1024)) "$f" >"$f.tail" && mv "$f.tail" "$f"
    fi
  done
  exit $rc
}

# ---- env: what this machine is. A missing GPU ends the check here (the summary says so).
{
  echo "date: $(date -u)"; echo "host: $(uname -a)"; echo "cpus: $JOBS"
  command -v nvidia-smi && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv
  command -v nvcc && nvcc --version | tail -2
  command -v g++ && g++ --version | head -1
  command -v cmake && cmake --version | head -1
  command -v ninja && ninja --version
  command -v pkg-config || echo "pkg-config: none (CMakeLists.txt finds PCRE2 and utf8proc without it)"
  python3 -c 'import sys, torch, transformers, peft; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__, "peft", peft.__version__)' 2>&1
  df -h "$WORK" | tail -1; free -g | head -2
} >>"$OUT/env.log" 2>&1
gpu_name=""
if command -v nvidia-smi >/dev/null; then
  gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
  why="nvidia-smi lists no GPU: $(nvidia-smi -L 2>&1 | head -1)"
else
  why="no nvidia-smi on this machine (no NVIDIA driver)"
fi
echo "${gpu_name:-none}" >"$WORK/gpu-name.txt"
if [ -z "$gpu_name" ]; then
  echo "$why" >"$WORK/no-gpu.txt"
  say "no GPU found ($(head -c 200 "$WORK/no-gpu.txt"))"
  [ "${DEVICE_CHECK_FORCE:-0}" = 1 ] || finish
else
  rm -f "$WORK/no-gpu.txt"
fi
# C++20 as this project writes it: GCC 11 or newer (GCC 12 in CI).
gxx_major=$(g++ -dumpversion 2>/dev/null | cut -d. -f1)
if [ -z "$gxx_major" ] || [ "$gxx_major" -lt 11 ]; then
  say "g++ ${gxx_major:-missing}: the build needs GCC 11 or newer (C++20)"
fi

# ---- configure and build
if [ ! -d .device-deps ]; then
  echo ".device-deps/ is missing: run scripts/device-deps.sh where the Debian packages are, and carry it" \
    >>"$OUT/build.log"
  skip configure "no .device-deps"
  finish
fi
step configure 120 build cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLP_BUILD_BENCH=OFF \
  -DLP_CUDA=ON -DLP_CUDA_ARCHITECTURES="$ARCHS" -DCMAKE_PREFIX_PATH="$ROOT/.device-deps" \
  -DCMAKE_LIBRARY_ARCHITECTURE=x86_64-linux-gnu || finish  # .device-deps' layout, wherever CMake runs
step build-loraplex "$BUILD_LIMIT" build cmake --build "$BUILD" -j "$JOBS" --target loraplex || finish
mapfile -t gpu_tests < <(find tests -name '*_gpu_test.cpp' -printf '%f\n' | sed 's/\.cpp$//' | sort)
printf '%s\n' "${gpu_tests[@]}" >"$WORK/gpu-tests.txt"
LP="$BUILD/loraplex"

# The GPU tests build while the demo models are written (the writer is mostly disk and memory).
tests_pid=""
if [ ${#gpu_tests[@]} -gt 0 ]; then
  step build-gpu-tests "$BUILD_LIMIT" build cmake --build "$BUILD" -j "$JOBS" --target "${gpu_tests[@]}" &
  tests_pid=$!
else
  skip build-gpu-tests "no tests/*/*_gpu_test.cpp"
fi
MODELS=${DEVICE_CHECK_MODELS:-1b 8b}
M1="$WORK/models/1b"
# The demo writer is deterministic, so a rerun on the same machine keeps a model written completely before.
for m in $MODELS; do
  dir=$WORK/models/$m
  if [ -f "$dir/.written" ]; then
    skip_ok "demo-$m" "kept from an earlier run"
    continue
  fi
  rm -rf "$dir"
  extra=()
  [ "$m" = 1b ] && extra=(--adapters 16 --rank 16)
  step "demo-$m" 180 bench "$LP" demo-model "$dir" --shape "$m" "${extra[@]}" && touch "$dir/.written"
done
tests_ok=1
if [ -n "$tests_pid" ]; then wait "$tests_pid" || tests_ok=0; fi

# ---- GPU tests: every *_gpu_test binary, with gtest's JSON report
mkdir -p "$WORK/gtest"
rm -f "$WORK"/gtest/*.json
for t in "${gpu_tests[@]}"; do
  if [ "$tests_ok" = 1 ] && [ -x "$BUILD/tests/$t" ]; then
    (cd "$BUILD" && step "test:$t" 120 gpu-tests "./tests/$t" --gtest_output="json:$WORK/gtest/$t.json")
  else
    skip "test:$t" "not built"
  fi
done

# ---- bench --device cuda on each model (the issue's workload: batch 64 over 16 adapters, rank 16), and the
# peer (transformers + peft) on the 1b one. Order: what proves correctness before what only measures.
BENCH_ARGS=(--device cuda --batch 64 --adapters 16 --rank 16 --prompt-len 256 --gen 32 --repeats 3 --json)
run_bench() {
  local m=$1 dir=$WORK/models/$1
  rm -f "$WORK/bench-$m.json"
  if [ -f "$dir/model.safetensors" ]; then
    step "bench-$m" 200 bench bash -c '"$@" >"'"$WORK/bench-$m.json"'"' _ "$LP" bench --model "$dir" "${BENCH_ARGS[@]}"
    cat "$WORK/bench-$m.json" >>"$OUT/bench.log" 2>/dev/null
  else
    skip "bench-$m" "no demo model"
  fi
}
rm -f "$WORK/logits.json" "$WORK/peer.json"
have_1b=0
[ -d "$M1/adapters/medical-qa" ] && have_1b=1
for m in $MODELS; do [ "$m" = 1b ] && run_bench 1b; done
if [ $have_1b = 1 ]; then
  step logits-vs-hf 150 peer python3 scripts/gpu/compare_logits.py --loraplex "$LP" --model "$M1" \
    --adapter "$M1/adapters/medical-qa" --out "$WORK/logits.json"
else
  skip logits-vs-hf "no 1b demo model"
fi
for m in $MODELS; do [ "$m" = 1b ] || run_bench "$m"; done
if [ $have_1b = 1 ]; then
  mapfile -t adapter_dirs < <(find "$M1/adapters" -mindepth 1 -maxdepth 1 -type d | sort)
  step peer-generate 150 peer python3 scripts/gpu/peer_generate.py --model "$M1" --adapters "${adapter_dirs[@]}" \
    --batch 64 --prompt-len 256 --gen 32 --out "$WORK/peer.json"
else
  skip peer-generate "no 1b demo model"
fi
finish
