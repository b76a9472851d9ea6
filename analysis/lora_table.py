#!/usr/bin/python3
"""Table of the LoRA study (scripts/lora-study.sh), from its run files.

    /usr/bin/python3 analysis/lora_table.py OUT      # OUT/pretrain/runs/*.h5, OUT/finetune/runs/*.h5

For the pretrained network (before) and each fine-tuning run (after: full fine-tuning, LoRA) it
prints a markdown table: test accuracy on the focus classes (data.focus_classes, the held-out digit)
and on the other classes, trainable parameters, peak resident memory during training and the median
time per step (the first 10% of steps left out as warm-up). Exit 1 when OUT holds no completed
pretraining run or no fine-tuning run; runs that did not complete are listed with their status.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import xpand_h5 as xh  # noqa: E402


def read(run):
    """One table row from a run (xpand_h5.Run)."""
    kind = run.config.get("param.kind", "?")
    row = dict(path=run.path, status=run.status, trainable=run.attrs.get("trainable_params"))
    row["label"] = {"dense": "full fine-tuning", "lora": "LoRA"}.get(kind, kind)
    if kind == "lora":
        row["label"] += f" (r = {run.config.get('param.rank')}, alpha = {run.config.get('param.lora_alpha')})"
    lr = run.config.get("train.lr")
    if lr is not None:
        row["label"] += f", lr {lr:g}"
    ev = run.eval
    if "test_focus_acc" not in ev or len(ev["step"]) == 0:
        row.update(focus=np.nan, rest=np.nan, acc=np.nan, steps=0)
    else:
        row.update(focus=float(ev["test_focus_acc"][-1]), rest=float(ev["test_rest_acc"][-1]),
                   acc=float(ev["test_acc"][-1]), steps=int(ev["step"][-1]),
                   curve=list(zip(ev["step"].tolist(), ev["test_focus_acc"].tolist(), ev["test_rest_acc"].tolist())))
    t = run.train.get("time_step", np.array([]))
    if len(t) > 1:
        row["ms"] = 1e3 * float(np.median(t[max(1, len(t) // 10):]))
        row["mem"] = float(np.max(run.train["mem_peak"])) / 2**20
    else:
        row["ms"] = row["mem"] = np.nan
    return row


def runs(d):
    if not os.path.isdir(os.path.join(d, "runs")):
        return []
    return [read(r) for r in xh.load_runs(d, errors="skip", nested=False)]


def fmt(x, spec):
    return "-" if x is None or (isinstance(x, float) and np.isnan(x)) else format(x, spec)


def main():
    ap = argparse.ArgumentParser(description="Markdown table of the LoRA study (scripts/lora-study.sh): held-out "
                                 "and other-digit accuracy, trainable parameters, memory and step time of the "
                                 "pretrained network and each fine-tuning run.")
    ap.add_argument("out", help="the study's output directory (OUT/pretrain/runs, OUT/finetune/runs)")
    out = ap.parse_args().out
    pre = [r for r in runs(os.path.join(out, "pretrain")) if r["status"] == "completed"]
    fine = runs(os.path.join(out, "finetune"))
    if not pre:
        sys.exit(f"lora_table: no completed pretraining run under {out}/pretrain/runs")
    if not fine:
        sys.exit(f"lora_table: no fine-tuning run under {out}/finetune/runs")
    before = pre[-1]
    print("| network | status | steps | acc. held-out digit | acc. other digits | test acc. | trainable params "
          "| peak memory (MiB) | ms/step |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = [dict(before, label="pretrained (before fine-tuning)", curve=None)] + sorted(fine, key=lambda r: r["label"])
    for r in rows:
        print(f"| {r['label']} | {r['status']} | {r['steps']} | {fmt(r['focus'], '.4f')} | {fmt(r['rest'], '.4f')} "
              f"| {fmt(r['acc'], '.4f')} | {fmt(r['trainable'], ',')} | {fmt(r['mem'], '.0f')} | {fmt(r['ms'], '.2f')} |")
    print("\nheld-out digit / other digits by step:\n")
    for r in rows[1:]:
        if r.get("curve"):
            print(f"- {r['label']}: " + ", ".join(f"{s}: {f:.3f} / {o:.3f}" for s, f, o in r["curve"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
