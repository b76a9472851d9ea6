#!/usr/bin/python3
"""Alpha-beta model of data-parallel step time on H100 nodes, from `xpand plan --json`.

    /usr/bin/python3 analysis/scaling_model.py [BINARY]     # default build/xpand

For every row it runs `BINARY plan --json CONFIG --set ...` from the repository root and reads the
network totals: trainable (raw elements all-reduced under dist.cut: raw), cut_elements (under
dist.cut: narrowest), collapsed (the dense network) and flops_per_step (forward+backward at the
config's batch). Weak scaling: every GPU runs the preset's batch, so compute per GPU does not
change with n. For n in {8, 64, 512} it prints markdown tables of bytes, all-reduce time, compute
time, step time with no overlap (compute + comm) and with ideal overlap (max(compute, comm)),
communication's share and what reducing at the narrowest cut saves. Every hardware number is an
assumption (docs/SCALING.md says where each comes from); the output is deterministic. Its last
table runs `BINARY plan --ranks n --json` for a few presets: dist.cut auto's per-layer choice on
those links, with compute priced at the fp32 rate.
"""
import argparse
import json
import math
import os
import re
import subprocess
import sys

GPUS_PER_NODE = 8
SCALES = (8, 64, 512)
# Network profiles. busbw in the nccl-tests sense (busbw = algbw * 2(n-1)/n); alpha per step.
NETWORKS = {
    "nominal": dict(nvlink_busbw=450e9, node_inter_bw=8 * 46e9, alpha_intra=2e-6, alpha_inter=10e-6),
    "pessimistic": dict(nvlink_busbw=370e9, node_inter_bw=1 * 46e9, alpha_intra=5e-6, alpha_inter=20e-6),
}
# Compute profiles: achieved FLOP/s = peak * efficiency; a step never takes less than `floor` s
# (eager libtorch: launch and dispatch of the step's ~100 small kernels, Adam included).
COMPUTES = {
    "fp32": dict(peak=67e12, eff=0.50, floor=0.5e-3),   # what xpand runs today (float32, no TF32)
    "bf16": dict(peak=989e12, eff=0.40, floor=0.5e-3),  # what-if: dense BF16 tensor cores
}
SUBSPACE_DIM = 1000  # analytic ω rows: d numbers all-reduced; P dense (D x d)

# (label, config, --set overrides); "subspace" rows are derived from their dense plan.
ROWS = [
    ("fmnist-mlp", "configs/fmnist-mlp.yaml", []),
    ("fmnist-mlp lora r8", "configs/fmnist-mlp.yaml", ["param.kind=lora", "param.rank=8"]),
    ("fmnist-expanded f2 d3", "configs/nets/fmnist-expanded.yaml", []),
    ("fmnist-mlp expanded f16 d2", "configs/fmnist-mlp.yaml",
     ["param.kind=expanded", "param.factor=16", "param.depth=2"]),
    ("expansive-mnist", "configs/nets/expansive-mnist.yaml", []),
    ("expansive-mnist expanded f4 d2", "configs/nets/expansive-mnist.yaml",
     ["param.kind=expanded", "param.factor=4", "param.depth=2"]),
    ("lowrank-mlp", "configs/nets/lowrank-mlp.yaml", []),
    ("lowrank-deep", "configs/nets/lowrank-deep.yaml", []),
    ("lowrank-deep-r150", "configs/nets/lowrank-deep-r150.yaml", []),
    ("omega-mlp", "configs/nets/omega-mlp.yaml", []),
    (f"omega-mlp subspace d{SUBSPACE_DIM} *", "configs/nets/omega-mlp.yaml", "subspace"),
    ("smallnet-cnn", "configs/nets/smallnet-cnn.yaml", []),
    ("smallnet-cnn expanded f4 (CL)", "configs/nets/smallnet-cnn.yaml",
     ["param.kind=expanded", "param.factor=4"]),
    ("gpt-char", "configs/nets/gpt-char.yaml", []),
    ("gpt-char expanded f4 d2", "configs/nets/gpt-char.yaml",
     ["param.kind=expanded", "param.factor=4", "param.depth=2"]),
    ("gpt-char lora r8", "configs/nets/gpt-char.yaml", ["param.kind=lora", "param.rank=8"]),
    ("gpt-char lowrank r64", "configs/nets/gpt-char.yaml", ["param.kind=lowrank", "param.rank=64"]),
]
SENSITIVITY_ROWS = ("gpt-char", "gpt-char expanded f4 d2", "gpt-char lora r8", "fmnist-expanded f2 d3",
                    "fmnist-mlp expanded f16 d2")


def plan(binary, root, config, sets):
    cmd = [binary, "plan", "--json", config] + [a for s in sets for a in ("--set", s)]
    p = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"scaling_model: `{' '.join(cmd)}` failed (exit {p.returncode}):\n{p.stderr.strip()}")
    d = json.loads(p.stdout)
    cfg = d["config"]
    elem = 8 if re.search(r"^dtype: float64$", cfg, re.M) else 4
    first = float(re.search(r"^  first_bucket_mb: (\S+)$", cfg, re.M).group(1))
    cap = float(re.search(r"^  bucket_mb: (\S+)$", cfg, re.M).group(1))
    return dict(batch=d["batch_size"], raw=d["trainable"], cut=d["cut_elements"], dense=d["collapsed"],
                flops=d["flops_per_step"], elem=elem, first_bucket=first * 2**20, bucket=cap * 2**20)


def subspace(p, dim):
    """θ = θ0 + P ω: only ω (dim numbers) trains; P θ-projection costs 2·D·dim each way."""
    return dict(p, raw=dim, cut=dim, flops=p["flops"] + 4 * p["dense"] * dim)


def buckets(nbytes, first, cap):
    """Approximate count of the reducer's buckets (first bucket small, then `cap`)."""
    return 0 if nbytes <= 0 else 1 + math.ceil(max(0.0, nbytes - first) / cap)


def latency(n, net):
    """One all-reduce's latency: chain through the node, double binary tree across nodes (NCCL tree)."""
    g = min(n, GPUS_PER_NODE)
    return 2 * (g - 1) * net["alpha_intra"] + 2 * math.ceil(math.log2(n // g)) * net["alpha_inter"]


def bandwidth_time(n, nbytes, net):
    """Reduce-scatter + all-gather in the node; across nodes each of the g rails all-reduces S/g.
    NCCL pipelines the phases, so the slower one sets the time."""
    g = min(n, GPUS_PER_NODE)
    nodes = n // g
    t = 2 * (g - 1) / g * nbytes / net["nvlink_busbw"]
    if nodes > 1:
        t = max(t, 2 * (nodes - 1) / nodes * nbytes / net["node_inter_bw"])
    return t


def allreduce_time(n, nbytes, k, net):
    """k all-reduces (buckets) totalling nbytes on n GPUs: k latencies plus one bandwidth term."""
    if n <= 1 or nbytes <= 0:
        return 0.0
    return k * latency(n, net) + bandwidth_time(n, nbytes, net)


def model(p, n, net, comp):
    t_comp = max(p["flops"] / (comp["peak"] * comp["eff"]), comp["floor"])
    out = dict(comp=t_comp)
    for which in ("raw", "cut"):
        s = p[which] * p["elem"]
        t = allreduce_time(n, s, buckets(s, p["first_bucket"], p["bucket"]), net)
        out[which] = dict(bytes=s, comm=t, serial=t_comp + t, overlap=max(t_comp, t),
                          share=t / (t_comp + t), exposed=max(0.0, t - t_comp) / max(t_comp, t))
    return out


# dist.cut auto on H100 nodes: `xpand plan --ranks n --json` per preset and scale (weak scaling:
# data.batch_size = n x the per-GPU batch), with the nominal network's effective bandwidth and
# latency at n and the fp32 compute rate. (label, config, --set, per-GPU batch)
CHOOSER_ROWS = [
    ("nanoGPT char, expanded MLP (nanogpt-char.yaml), 64 x 256 tokens", "configs/nets/gpt-char.yaml",
     ["layers.h*.mlp.*.kind=expanded", "layers.h*.mlp.*.factor=1.30209", "layers.h*.mlp.*.depth=2"], 64),
    ("nanoGPT char, expanded MLP, 2 x 256 tokens", "configs/nets/gpt-char.yaml",
     ["layers.h*.mlp.*.kind=expanded", "layers.h*.mlp.*.factor=1.30209", "layers.h*.mlp.*.depth=2"], 2),
    ("Expansive fc1 as 21 factors (expansive-mnist.yaml)", "configs/nets/expansive-mnist.yaml",
     ["layers.fc1.kind=expanded", "layers.fc1.depth=21", "layers.fc1.factor=1", "layers.fc1.width_of=out",
      "layers.fc1.residual=tail", "layers.fc1.first_bias=true", "layers.fc1.init=torch-default"], 64),
    ("ExpandNets SmallNet CL x4 (smallnet-cnn.yaml)", "configs/nets/smallnet-cnn.yaml",
     ["param.kind=expanded", "param.factor=4"], 128),
    ("fmnist-mlp expanded f16 d2", "configs/fmnist-mlp.yaml",
     ["param.kind=expanded", "param.factor=16", "param.depth=2"], 128),
]


def plan_ranks(binary, root, config, sets, n, gbps, latency_us, gflops):
    cmd = [binary, "plan", config, "--json", "--ranks", str(n), "--link-gbps", f"{gbps:.6g}",
           "--latency-us", f"{latency_us:.6g}", "--gemm-gflops", f"{gflops:.6g}"]
    for s in sets:
        cmd += ["--set", s]
    p = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"scaling_model: {' '.join(cmd)} failed:\n{p.stderr}")
    return json.loads(p.stdout)


def choice_summary(layers):
    """Layer names with their block index folded (h3.mlp.c_fc -> h*.mlp.c_fc), per choice."""
    groups = {}
    for l in layers:
        name = re.sub(r"^h\d+\.", "h*.", l["name"])
        groups.setdefault((name, l["choice"]), 0)
        groups[(name, l["choice"])] += 1
    return "; ".join(f"{n} {c}" + (f" x{k}" if k > 1 else "") for (n, c), k in groups.items() if c != "none") \
        or "(no layer has a choice)"


def chooser_tables(binary, root):
    net, comp = NETWORKS["nominal"], COMPUTES["fp32"]
    gflops = comp["peak"] * comp["eff"] / 1e9
    print("dist.cut auto on H100 nodes (nominal network, fp32 at 33.5 TFLOP/s, overlap 0, 0.5 ms compute floor; "
          "from `xpand plan --ranks`); times in ms, efficiency = one GPU's step / n GPUs' step")
    print()
    rows = []
    for label, config, sets, per_gpu in CHOOSER_ROWS:
        for n in SCALES:
            per_byte = bandwidth_time(n, 1.0, net)  # seconds per byte of the buffer
            busbw = 2 * (n - 1) / n / per_byte      # bytes/s per GPU in the ring convention xpand plan uses
            tree_steps = 2 * math.ceil(math.log2(n))
            d = plan_ranks(binary, root, config, sets + [f"data.batch_size={per_gpu * n}"], n, busbw * 8 / 1e9,
                           latency(n, net) / tree_steps * 1e6, gflops)
            # The plan prices FLOPs only; a step takes at least the compute floor (launch-bound nets).
            floor = comp["floor"]
            step = {k: max(v["compute_s"], floor) + v["exposed_s"] for k, v in d["modes"].items()}
            one = max(d["one_rank_step_s"], floor)
            rows.append([label, str(n), choice_summary(d["layers"]), ms(one), ms(step["auto"]),
                         ms(step["narrowest"]), ms(step["raw"]), f"{one / step['auto']:.2f}",
                         f"{one / step['narrowest']:.2f}", f"{one / step['raw']:.2f}"])
    table(["preset (per-GPU batch)", "GPUs", "auto's choice per layer", "1 GPU ms", "auto ms", "narrowest ms",
           "raw ms", "eff. auto", "eff. narrowest", "eff. raw"], rows, text_cols=3)


def ms(t):
    return f"{t * 1e3:.3g}" if t < 1 else f"{t * 1e3:.0f}"


def mb(b):
    return f"{b / 1e6:.3g}"


def pct(x):
    return f"{100 * x:.1f}"


def table(header, rows, text_cols=1):
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" if i < text_cols else "---:" for i in range(len(header))) + "|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("binary", nargs="?", help="xpand binary (default: build/xpand of this repository)")
    args = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    binary = os.path.abspath(args.binary) if args.binary else os.path.join(root, "build", "xpand")
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        sys.exit(f"scaling_model: xpand binary not found or not executable: {binary}\n"
                 "build it first (scripts/build.sh) or pass its path: analysis/scaling_model.py PATH")

    plans = {}
    for label, config, sets in ROWS:
        plans[label] = subspace(plan(binary, root, config, []), SUBSPACE_DIM) if sets == "subspace" \
            else plan(binary, root, config, sets)

    print("Model parameters (assumptions; sources in docs/SCALING.md)")
    print()
    table(["profile", "NVLink busbw GB/s", "inter-node GB/s per node", "α intra µs", "α inter µs"],
          [[k, f"{v['nvlink_busbw'] / 1e9:.0f}", f"{v['node_inter_bw'] / 1e9:.0f}",
            f"{v['alpha_intra'] * 1e6:.0f}", f"{v['alpha_inter'] * 1e6:.0f}"] for k, v in NETWORKS.items()])
    rows = []
    for net in NETWORKS:
        for n in SCALES:
            lat, per_byte = latency(n, NETWORKS[net]), bandwidth_time(n, 1.0, NETWORKS[net])
            rows.append([net, str(n), f"{lat * 1e6:.0f}", f"{2 * (n - 1) / n / per_byte / 1e9:.0f}",
                         f"{lat / per_byte / 1e6:.3g}"])
    table(["profile", "n", "latency per all-reduce µs", "effective busbw GB/s",
           "size where latency = bandwidth term MB"], rows)
    table(["compute", "peak TFLOP/s", "efficiency", "achieved TFLOP/s", "floor ms"],
          [[k, f"{v['peak'] / 1e12:.0f}", f"{v['eff']:.2f}", f"{v['peak'] * v['eff'] / 1e12:.1f}",
            ms(v["floor"])] for k, v in COMPUTES.items()])

    print("Per GPU and step (from xpand plan; * = analytic subspace row)")
    print()
    fp32 = COMPUTES["fp32"]
    table(["row", "batch", "dense MB", "raw MB", "cut MB", "raw/cut", "cut/dense", "GFLOP", "compute ms (fp32)"],
          [[lab, str(p["batch"]), mb(p["dense"] * p["elem"]), mb(p["raw"] * p["elem"]), mb(p["cut"] * p["elem"]),
            f"{p['raw'] / p['cut']:.1f}", f"{p['cut'] / p['dense']:.3g}", f"{p['flops'] / 1e9:.3g}",
            ms(model(p, 1, NETWORKS["nominal"], fp32)["comp"])] for lab, p in plans.items()])

    for n in SCALES:
        print(f"n = {n} GPUs ({max(1, n // GPUS_PER_NODE)} node(s)), nominal network, fp32 compute; times in ms")
        print()
        rows = []
        for lab, p in plans.items():
            m = model(p, n, NETWORKS["nominal"], fp32)
            r, c = m["raw"], m["cut"]
            rows.append([lab, ms(m["comp"]), ms(r["comm"]), ms(c["comm"]), ms(r["serial"]), ms(c["serial"]),
                         pct(r["share"]), pct(c["share"]), ms(r["overlap"]), ms(c["overlap"]),
                         f"{r['serial'] / c['serial']:.2f}", f"{r['overlap'] / c['overlap']:.2f}"])
        table(["row", "compute", "comm raw", "comm cut", "step raw", "step cut", "comm % raw", "comm % cut",
               "overlap raw", "overlap cut", "saved x (serial)", "saved x (overlap)"], rows)

    print("Sensitivity at n = 512: network x compute profile (bf16 left out where the floor sets compute); "
          "times in ms")
    print()
    rows = []
    for lab in SENSITIVITY_ROWS:
        for net in NETWORKS:
            for comp in COMPUTES:
                m = model(plans[lab], 512, NETWORKS[net], COMPUTES[comp])
                if comp != "fp32" and m["comp"] == model(plans[lab], 512, NETWORKS[net], fp32)["comp"]:
                    continue
                r, c = m["raw"], m["cut"]
                rows.append([lab, net, comp, ms(m["comp"]), ms(r["comm"]), ms(c["comm"]), pct(r["share"]),
                             pct(c["share"]), pct(r["exposed"]), pct(c["exposed"]),
                             f"{r['serial'] / c['serial']:.2f}", f"{r['overlap'] / c['overlap']:.2f}"])
    table(["row", "network", "compute", "compute ms", "comm raw", "comm cut", "comm % raw", "comm % cut",
           "exposed % raw", "exposed % cut", "saved x (serial)", "saved x (overlap)"], rows, text_cols=3)

    chooser_tables(binary, root)


if __name__ == "__main__":
    main()
