#!/usr/bin/env bash
# The GPU check: one script that fits in 9 minutes on one H100/H200 with 16 cores and writes at most 8 files to
# $OUT (default ./gpu_check_out), each section under its own timeout so that a hang costs that section only:
#
#   summary.txt     each section's exit status and seconds, the bench figures (images/s, achieved vs peak TFLOP/s)
#   environment.txt nvidia-smi, python, torch, CUDA and the packages the run imports
#   cuda_tests.txt  the tests marked `cuda` (steps without host sync, compiled == eager on the GPU), -v
#   suite.txt       the whole suite under a timeout, names streamed (-v)
#   quickstart.txt  README's five quickstart commands on CUDA (side by side) and their verdicts
#   bench.txt       python -m ablate.bench epoch at scale=cifar10_gpu: simsiam, byol, vicreg eager, vicreg compiled
#   table.txt       a short Table 4 at scale=cifar10_gpu (1 epoch, all 24 cells and the baselines), K cells at once
#   report.md       python -m ablate.report of that table
#
#   scripts/gpu_check.sh              # on the GPU machine
#   scripts/gpu_check.sh --dry-run    # on a CPU with tiny sizes: the plumbing only (tests/test_gpu_check.py)
#
# CIFAR-10 comes from an npz (data=npz): $ABLATE_CIFAR10_NPZ, else .data/cifar10_jpeg.npz in the checkout;
# without one the CIFAR sections are skipped.
#
# The device machine has torch but lacks some of the project's packages, and reaches no registry. Carry them as
# wheels, once, in the checkout's root (/work/.library/device/README.md):
#   echo /.whl/ >> .git/info/exclude; echo /.data/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     hydra-core==1.3.2 omegaconf==2.3.0 antlr4-python3-runtime==4.9.3 hydra-joblib-launcher==1.2.0
#   mkdir -p .data && cp /path/to/cifar10_jpeg.npz .data/
# and name `.whl` and `.data` in the run's carry. The script installs .whl/*.whl into /tmp/site when present.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SELF="$ROOT/scripts/$(basename "$0")"
DRY=0 ONLY=
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --section) ONLY=$2; shift ;;  # internal: one section, in a process of its own that `timeout` can stop
    *) echo "usage: $0 [--dry-run]" >&2; exit 2 ;;
  esac
  shift
done
OUT="${OUT:-$ROOT/gpu_check_out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
if [ -z "$ONLY" ]; then
  export GPU_CHECK_WORK; GPU_CHECK_WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")"
  export PYTHONUNBUFFERED=1 PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
  if ls "$ROOT"/.whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      "$ROOT"/.whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
  fi
fi
WORK=$GPU_CHECK_WORK
cd "$WORK" || exit 1

T0=$SECONDS
# section NAME TIMEOUT: run the function NAME in a child of this script under TIMEOUT seconds, its output into
# $OUT/NAME.txt, its status and seconds into summary.txt
section() {
  local name=$1 limit=$2 start=$SECONDS rc
  echo "== $name (limit ${limit}s)" | tee -a "$OUT/summary.txt"
  timeout -k 10 "$limit" bash "$SELF" --section "$name" $([ $DRY = 1 ] && echo --dry-run) > "$OUT/$name.txt" 2>&1
  rc=$?
  echo "$name: exit $rc$([ $rc = 124 ] && echo ' (timed out)'), $((SECONDS - start)) s" | tee -a "$OUT/summary.txt"
}

NPZ="${ABLATE_CIFAR10_NPZ:-}"
for c in "$ROOT/.data/cifar10_jpeg.npz"; do
  [ -z "$NPZ" ] && [ -f "$c" ] && NPZ="$c"
done
TINY=("backbone.widths=[4,8,8,16]" model.head_width_mult=0.01 train.batch_size=16 data.train_size=64
      data.test_size=32 eval.bank_size=64 eval.linear.epochs=2 train.epochs=1 train.warmup_epochs=0)
if [ $DRY = 1 ]; then
  DEV=(device=cpu) SIZE=("${TINY[@]}") GPU_DATA=(data=shapes backbone=small_cnn "${TINY[@]}")
  SUITE=(-n0 tests/test_compile.py -k "modes or combinations") ROWS=(+row=simsiam +reg=none "~hydra.callbacks.baselines")
  CUDA_TESTS=tests/test_cuda.py QUICKSTART=1 METHODS=(vicreg)  # each section's plumbing, at the least work
  LIMITS=(environment=20 cuda_tests=60 suite=60 quickstart=120 bench=90 table=150)
else
  DEV=(device=cuda) SIZE=() GPU_DATA=(data=npz "data.path=$NPZ" "data.mean=[0.4913,0.4821,0.4465]"
                                      "data.std=[0.2452,0.2428,0.2606]")
  SUITE=(tests) ROWS=() CUDA_TESTS=tests QUICKSTART=5 METHODS=(simsiam byol vicreg)
  LIMITS=(environment=15 cuda_tests=90 suite=120 quickstart=60 bench=110 table=130)
fi
limit() { for kv in "${LIMITS[@]}"; do [ "${kv%%=*}" = "$1" ] && echo "${kv#*=}"; done; }
cuda_tests() { "$PY" -m pytest -v -n0 -p no:cacheprovider -m cuda "$ROOT/$CUDA_TESTS"; }  # one GPU: one process
suite() { "$PY" -m pytest -v -p no:cacheprovider "${SUITE[@]/#tests/$ROOT/tests}"; }

environment() {
  nvidia-smi || echo "no nvidia-smi"
  "$PY" - <<'EOF'
import platform, torch
print("python", platform.python_version(), "| torch", torch.__version__, "| cuda", torch.version.cuda,
      "| cudnn", torch.backends.cudnn.version())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("gpu", p.name, f"{p.total_memory / 2**30:.1f} GiB", p.multi_processor_count, "SMs")
else:
    print("gpu none: CPU figures only")
for m in ("hydra", "omegaconf", "hydra_plugins.hydra_joblib_launcher", "joblib", "pandas", "matplotlib", "tqdm"):
    try:
        mod = __import__(m, fromlist=["_"])
        print(m, getattr(mod, "__version__", "ok"))
    except ImportError as e:
        print(m, "MISSING", e)
EOF
  nproc
}

quickstart() {
  local i=0 pids=() cmd
  local cmds=("+method=simsiam ~predictor" "+method=simsiam" "+method=byol" "+method=vicreg" "+method=vicreg ~var ~cov")
  cmds=("${cmds[@]:0:$QUICKSTART}")
  for cmd in "${cmds[@]}"; do  # side by side: small CNN runs leave the GPU mostly idle
    i=$((i + 1))
    # shellcheck disable=SC2086  # cmd is a list of overrides
    "$PY" -m ablate $cmd "${DEV[@]}" "${SIZE[@]}" "hydra.run.dir=$WORK/qs/$i" > "$WORK/qs$i.log" 2>&1 &
    pids+=($!)
  done
  i=0
  for cmd in "${cmds[@]}"; do
    i=$((i + 1))
    wait "${pids[$((i - 1))]}"
    echo "## python -m ablate $cmd: exit $?"
    tail -n 3 "$WORK/qs$i.log"
  done
}

bench() {
  [ $DRY = 0 ] && [ -z "$NPZ" ] && { echo "skipped: no CIFAR-10 npz (set ABLATE_CIFAR10_NPZ)"; return 0; }
  local m
  for m in "${METHODS[@]}"; do
    "$PY" -m ablate.bench epoch --method $m --rounds 1 --warmup 1 --no-reference "${DEV[@]}" scale=cifar10_gpu \
      "${GPU_DATA[@]}"
  done
  [ $DRY = 1 ] && return 0  # inductor's CPU build takes minutes on a small machine
  "$PY" -m ablate.bench epoch --method vicreg --rounds 1 --warmup 1 --no-reference "${DEV[@]}" scale=cifar10_gpu \
    "${GPU_DATA[@]}" train.compile=reduce-overhead
}

table() {
  [ $DRY = 0 ] && [ -z "$NPZ" ] && { echo "skipped: no CIFAR-10 npz (set ABLATE_CIFAR10_NPZ)"; return 0; }
  "$PY" -m ablate -m +experiment=vicreg_table4 "${ROWS[@]}" scale=cifar10_gpu train.epochs=1 train.warmup_epochs=0 \
    eval.linear.epochs=10 hydra/launcher=parallel "hydra.sweep.dir=$WORK/table" "${DEV[@]}" "${GPU_DATA[@]}"
  echo "table exit $?; cells finished: $(grep -l '"status": "complete"' "$WORK"/table/*/summary.json | wc -l)"
  "$PY" -m ablate.report "$WORK/table" --out "$WORK/report" --no-figures && cp "$WORK/report/report.md" "$OUT/report.md"
}

if [ -n "$ONLY" ]; then
  "$ONLY"
  exit $?
fi

figures() {  # the bench's JSON lines as one table: images/s and TFLOP/s against the device's bf16 dense peak
  "$PY" - "$OUT/bench.txt" <<'EOF'
import json, sys
peaks = {"H100": 989.4, "H200": 989.4, "A100": 312.0}  # bf16 dense TFLOP/s (vendor figures)
for line in open(sys.argv[1]):
    if not line.startswith('{"bench": "epoch"'):
        continue
    r = json.loads(line)
    peak = next((v for k, v in peaks.items() if k in r["device"]), None)
    frac = f"{100 * r['tflops'] / peak:.1f}% of {peak:.0f}" if peak else "no GPU peak known"
    print(f"bench {r['method']:<8} compile={r['compile']!s:<5} {r['runner_img_s']:>9.0f} images/s  "
          f"epoch {r['epoch_s']:.2f} s  {r['tflops']:.2f} TFLOP/s ({frac})  {r['device']}")
EOF
}

: > "$OUT/summary.txt"
echo "gpu_check $([ $DRY = 1 ] && echo '--dry-run (CPU, tiny sizes: plumbing only)') in $ROOT; data: ${NPZ:-none}" \
  | tee -a "$OUT/summary.txt"
for name in environment cuda_tests suite quickstart bench table; do
  section $name "$(limit $name)"
done
figures >> "$OUT/summary.txt" 2>&1
echo "total $((SECONDS - T0)) s" | tee -a "$OUT/summary.txt"
rm -rf "$WORK"
