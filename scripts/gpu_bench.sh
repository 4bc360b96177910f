#!/usr/bin/env bash
# The CIFAR-10 ResNet-18 epoch benchmark for SimSiam, BYOL and VICReg (scale=cifar10_gpu: batch 256, bf16
# autocast, channels_last on CUDA). Prints images/s, epoch time, peak memory and achieved TFLOP/s per method.
#
#   scripts/gpu_bench.sh                                  # CIFAR-10 from the shared JPEG copy (decoded once, cached)
#   scripts/gpu_bench.sh data=cifar10 data.root=/data     # torchvision's CIFAR-10 instead
#   COMPILE=true scripts/gpu_bench.sh                     # with torch.compile
#   REFERENCE=1 scripts/gpu_bench.sh                      # also time the torchvision-DataLoader reference loop
#
# Extra arguments are Hydra overrides; BENCH_ARGS adds options of `python -m ablate.bench epoch`
# (e.g. "--rounds 1 --warmup 0"). A CPU run with a tiny setting is in tests/test_bench.py.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
PY="${PYTHON:-python}"
NPZ="${ABLATE_CIFAR10_NPZ:-$here/../../shared/data/cifar10-jpeg/cifar10_jpeg.npz}"
overrides=(scale=cifar10_gpu "train.compile=${COMPILE:-false}")
case " $* " in
  *" data="*) ;;                                        # the caller chose the data
  *) overrides+=(data=npz "data.path=$NPZ" "data.mean=[0.4913,0.4821,0.4465]" "data.std=[0.2452,0.2428,0.2606]") ;;
esac
opts=(--rounds "${ROUNDS:-2}" --warmup 1)
[ "${REFERENCE:-0}" = 1 ] || opts+=(--no-reference)
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
"$PY" -c "import torch; print('device:', torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu (no CUDA: figures are not GPU figures)')"
for method in simsiam byol vicreg; do
  # shellcheck disable=SC2086  # BENCH_ARGS is a list of options
  "$PY" -m ablate.bench epoch --method "$method" "${opts[@]}" ${BENCH_ARGS:-} "${overrides[@]}" "$@" | tee /dev/stderr \
    | tail -n 1 >> "$out"
done
"$PY" - "$out" <<'PYEOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
print(f"\n{'method':<9}{'images/s':>10}{'epoch s':>9}{'peak MiB':>10}{'TFLOP/s':>9}  device")
for r in rows:
    print(f"{r['method']:<9}{r['runner_img_s']:>10.0f}{r['epoch_s']:>9.2f}{r['peak_mem_mb']:>10.0f}{r['tflops']:>9.2f}  {r['device']}")
print(json.dumps({"bench": "gpu_epoch", "runs": rows}))
PYEOF
