#!/usr/bin/env bash
# The LoRA study (the low-rank notebook's bonus task) in one command:
#   1. configs/lora/pretrain.yaml: an MLP on MNIST without the digit 7;
#   2. configs/lora/finetune.yaml: from that network, fine-tune on the digit 7 alone, fully and with
#      LoRA adapters (W0 and biases frozen), the same steps each;
#   3. analysis/lora_table.py: accuracy on 7 and on the rest before and after, trainable parameters,
#      peak memory and time per step of both.
# Usage: scripts/lora-study.sh [OUT] [--set key=value ...]   (OUT defaults to out/lora; the --set
# overrides go to both steps, e.g. --set train.max_steps=20 for a quick try). Rerunning resumes:
# finished runs are skipped. XPAND names the binary (default build/xpand).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
xpand="${XPAND:-$root/build/xpand}"
python="${PYTHON:-/usr/bin/python3}"
out="out/lora"
if [[ $# -gt 0 && "$1" != --* ]]; then out="$1"; shift; fi
[[ -x "$xpand" ]] || { echo "lora-study: $xpand is not an executable; build first (scripts/build.sh) or set XPAND" >&2; exit 2; }

"$xpand" train "$root/configs/lora/pretrain.yaml" --out "$out/pretrain" "$@"
# The pretraining run file: the run id of this configuration, as `xpand plan --json` resolves it.
run_id=$("$xpand" plan "$root/configs/lora/pretrain.yaml" --json "$@" |
         "$python" -c 'import json, sys; d = json.load(sys.stdin); print(d["run_id"] if "run_id" in d else d["runs"][0]["run_id"])')
pre="$out/pretrain/runs/$run_id.h5"
[[ -f "$pre" ]] || { echo "lora-study: the pretraining run file $pre is missing" >&2; exit 1; }
"$xpand" sweep "$root/configs/lora/finetune.yaml" --out "$out/finetune" --set "model.init_from=$(realpath "$pre")" "$@"
"$python" "$root/analysis/lora_table.py" "$out"
