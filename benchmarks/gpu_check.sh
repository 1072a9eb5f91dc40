#!/usr/bin/env bash
# GPU check, one CUDA device, about 6 minutes (under 8 on an H100):
#   1. resnetzoo vs torchvision (and timm) inference and training throughput at 224 and 448 px,
#      fp32, bf16 AMP and channels-last, plus torch.compile at 224 (benchmarks/run.py --device cuda);
#   2. peak memory of a 448 px training step with and without gradient checkpointing;
#   3. the CUB-200 recipe's data pipeline + training loop against a bare loop
#      (benchmarks/gpu_recipe_check.py, when present).
# Prints a short table and writes everything (Markdown, JSON, nvidia-smi, logs) to OUT_DIR.
#
#   bash benchmarks/gpu_check.sh OUT_DIR
#
# Without a CUDA device it says so and exits with status 2, measuring nothing.
set -euo pipefail

out="${1:-}"
if [[ -z "$out" || "$out" == -* ]]; then
    echo "usage: bash benchmarks/gpu_check.sh OUT_DIR" >&2
    exit 64
fi
cd "$(dirname "$0")/.."

if ! python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA device is visible to torch on this machine; nothing measured." >&2
    echo "gpu_check: run it on a GPU machine, or 'python benchmarks/run.py' for the CPU benchmark." >&2
    exit 2
fi

mkdir -p "$out"
nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || true
python - > "$out/device.txt" <<'EOF'
import torch
print(torch.cuda.get_device_name(0), "| torch", torch.__version__, "| CUDA", torch.version.cuda)
EOF
echo "device: $(cat "$out/device.txt")"

run() {  # run NAME ARGS...: one benchmarks/run.py call, its log and results under OUT_DIR/NAME
    local name="$1"
    shift
    echo "== $name: python benchmarks/run.py $*"
    python benchmarks/run.py --device cuda --out "$out/$name" "$@" > "$out/$name.log" 2>&1 \
        || { echo "   FAILED, see $out/$name.log"; tail -20 "$out/$name.log"; return 1; }
}

status=0
run resnet50-224 --models resnet50 --batch 128 --size 224 --rounds 10 \
    --sections inference compile train --train-amp || status=1
run resnet50-448 --models resnet50 --batch 32 --size 448 --rounds 10 \
    --sections inference train --train-amp || status=1
run memory-448 --models resnet50 --mem-size 448 --mem-batch 32 --rounds 5 --sections memory || status=1

if [[ -f benchmarks/gpu_recipe_check.py ]]; then
    echo "== recipe: python benchmarks/gpu_recipe_check.py"
    python benchmarks/gpu_recipe_check.py --json "$out/recipe.json" > "$out/recipe.log" 2>&1 \
        || { echo "   FAILED, see $out/recipe.log"; status=1; }
    tail -5 "$out/recipe.log"
else
    echo "== recipe: benchmarks/gpu_recipe_check.py not present, skipped"
fi

echo
echo "Summary (medians; full tables in $out/*/results.md):"
python - "$out" <<'EOF'
import json, sys
from pathlib import Path

print(f"{'run':14} {'measurement':62} {'unit':6} {'torchvision':>11} {'resnetzoo':>10} {'ratio':>6}")
for path in sorted(Path(sys.argv[1]).glob("*/results.json")):
    for row in json.loads(path.read_text())["rows"]:
        tv, rz = row["values"].get("torchvision"), row["values"].get("resnetzoo")
        ratio = f"{rz / tv:.2f}" if tv and rz else ""
        fmt = lambda v: "" if v is None else f"{v:.4g}"
        print(f"{path.parent.name:14} {row['name'][:62]:62} {row['unit']:6} {fmt(tv):>11} {fmt(rz):>10} {ratio:>6}")
EOF
exit $status
