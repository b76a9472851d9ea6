#!/usr/bin/python3
"""xpand's expanded layers against PyTorch doing the same shapes the seeds' way.

  /usr/bin/python3 bench/compare_torch.py [BINARY] [--rounds 3] [--repeats 5]
  /usr/bin/python3 bench/compare_torch.py --tables /tmp/bench_expanded.json

Default mode: (1) runs the C++ benchmark binary (default build/bench/bench_expanded) on the
nanoGPT MLP rows and on the BM_expanded rows at batch 64 and 4096 in the activation (order:0)
and planned (order:2) orders, reading its JSON output; (2) times the same shapes in PyTorch as
nn.Linear chains (bias=False), activation-first, forward+backward with the input not requiring
grad, torch.set_num_threads(2), one warm-up iteration and the median over repeats; (3) prints a
fixed-width table ('#'-headed header lines): xpand ms, PyTorch ms, xpand/PyTorch, and for the
nanoGPT rows expanded/dense on both sides. C++ and Python alternate: each round runs the binary
once on all rows, then Python on all shapes; the reported time is the median over rounds.

--tables JSON: prints the markdown tables of docs/PLANNER.md from a full bench_expanded JSON
(every order of every BM_expanded row, the planner's choice, planned / best fixed order).

Python is Debian's /usr/bin/python3 with python3-torch (1.13, CPU; the same libtorch and OpenBLAS
the C++ binary links).
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

ORDER_NAMES = {0: "activation", 1: "weight", 2: "planned"}
# glibc malloc settings of bench_expanded's main() (mallopt), for the PyTorch process too.
PINNED_TUNABLES = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=1073741824:glibc.malloc.top_pad=67108864"
NANOGPT = dict(embd=384, hidden=1536, tokens=2048, inner=2000)
CPP_FILTER = r"^BM_nanogpt_mlp|^BM_expanded/factor:[0-9]+/depth:[0-9]+/batch:(64|4096)/order:[02]$"


def layer_dim(factor):
    return 16 if factor == 100 else 128


def parse_name(name):
    """'BM_expanded/factor:4/depth:3/batch:64/order:1' -> ('BM_expanded', {'factor': 4, ...})."""
    parts = name.split("/")
    args = {}
    for p in parts[1:]:
        m = re.fullmatch(r"(\w+):(-?\d+)", p)
        if m:
            args[m.group(1)] = int(m.group(2))
    return parts[0], args


def to_ms(b):
    scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[b.get("time_unit", "ns")]
    return b["real_time"] * scale


def load_rows(path):
    """{row name: [iteration entries]} (repetitions give several), skipping aggregates and errors."""
    with open(path) as f:
        data = json.load(f)
    rows = {}
    for b in data["benchmarks"]:
        if b.get("run_type", "iteration") != "iteration" or b.get("error_occurred"):
            continue
        rows.setdefault(b.get("run_name", b["name"]), []).append(b)
    return data.get("context", {}), rows


def median_ms(entries):
    return statistics.median(to_ms(b) for b in entries)


# --- (1) the C++ side --------------------------------------------------------------------------


def run_cpp(binary):
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
        out = tmp.name
    try:
        cmd = [binary, f"--benchmark_filter={CPP_FILTER}", f"--benchmark_out={out}",
               "--benchmark_out_format=json", "--benchmark_format=console"]
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            sys.exit(f"error: {binary} exited with {r.returncode}:\n{r.stdout[-3000:]}")
        _, rows = load_rows(out)
    finally:
        os.unlink(out)
    return {name: (median_ms(bs), bs[0].get("label", "")) for name, bs in rows.items()}


# --- (2) the PyTorch side ----------------------------------------------------------------------


def py_chain(torch, dims):
    """nn.Linear chain dims[0] -> dims[1] -> ... (bias=False), the seeds' expanded layer."""
    return torch.nn.Sequential(*[torch.nn.Linear(a, b, bias=False) for a, b in zip(dims[:-1], dims[1:])])


def py_time(torch, make_step, repeats, target_s=0.05):
    """Median per-iteration ms over `repeats` timings of k iterations each (after one warm-up)."""
    step = make_step()
    t0 = time.perf_counter()
    step()  # warm-up
    first = time.perf_counter() - t0
    k = max(1, int(target_s / max(first, 1e-6)))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(k):
            step()
        times.append((time.perf_counter() - t0) / k * 1e3)
    return statistics.median(times)


def py_expanded_step(torch, factor, depth, batch):
    d = layer_dim(factor)
    h = round(factor * d)

    def make():
        torch.manual_seed(0)
        net = py_chain(torch, [d] + [h] * (depth - 1) + [d])
        x, g = torch.randn(batch, d), torch.randn(batch, d)

        def step():
            net.zero_grad(set_to_none=True)
            net(x).backward(g)
        return step
    return make


def py_mlp_step(torch, kind, input_grad):
    e, hd, n, inner = NANOGPT["embd"], NANOGPT["hidden"], NANOGPT["tokens"], NANOGPT["inner"]

    def make():
        torch.manual_seed(0)
        if kind == "dense":
            fc, proj = py_chain(torch, [e, hd]), py_chain(torch, [hd, e])
        else:  # seeds' expanded: each layer a depth-2 chain through the inner width
            fc, proj = py_chain(torch, [e, inner, hd]), py_chain(torch, [hd, inner, e])
        params = list(fc.parameters()) + list(proj.parameters())
        x, g = torch.randn(n, e).requires_grad_(input_grad), torch.randn(n, e)
        if kind == "weight":  # multiply the factors first (not the seeds' way; for reference)
            def fwd(m, z):
                w = m[0].weight.t() @ m[1].weight.t() if len(m) == 2 else m[0].weight.t()
                return z @ w
        else:
            def fwd(m, z):
                return m(z)

        def step():
            for p in params:
                p.grad = None
            x.grad = None
            fwd(proj, torch.nn.functional.gelu(fwd(fc, x))).backward(g)
        return step
    return make


# --- (3) the table -----------------------------------------------------------------------------


def compare(args):
    if not os.path.isfile(args.binary) or not os.access(args.binary, os.X_OK):
        sys.exit(f"error: benchmark binary not found or not executable: {args.binary}\n"
                 "build it with: cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DXPAND_BUILD_TESTS=OFF && "
                 "cmake --build build-bench --target bench_expanded")
    # Both sides under the same malloc settings: the binary pins them itself unless
    # XPAND_BENCH_MALLOC=default; glibc reads GLIBC_TUNABLES at start-up, so re-exec once.
    os.environ["XPAND_BENCH_MALLOC"] = args.malloc
    if args.malloc == "pinned" and os.environ.get("GLIBC_TUNABLES") != PINNED_TUNABLES:
        os.environ["GLIBC_TUNABLES"] = PINNED_TUNABLES
        os.execv(sys.executable, [sys.executable] + sys.argv)
    try:
        import torch
    except ImportError:
        sys.exit("error: this script needs PyTorch (Debian: apt-get install python3-torch)")
    torch.set_num_threads(args.threads)

    # Shapes timed in Python: activation-first chains (shared by xpand's order:0 and order:2 rows).
    shapes = {}
    for factor in (1, 4, 16, 100):
        for depth in (2, 3, 5):
            for batch in (64, 4096):
                shapes[("exp", factor, depth, batch)] = py_expanded_step(torch, factor, depth, batch)
    for kind in ("dense", "activation", "weight"):
        for input_grad in (0, 1):
            shapes[("mlp", kind, input_grad)] = py_mlp_step(torch, kind, bool(input_grad))

    cpp_rounds, py_rounds = [], []
    for r in range(args.rounds):
        t0 = time.perf_counter()
        cpp_rounds.append(run_cpp(args.binary))
        t1 = time.perf_counter()
        py_rounds.append({key: py_time(torch, make, args.repeats) for key, make in shapes.items()})
        print(f"# round {r + 1}/{args.rounds}: C++ {t1 - t0:.0f} s, PyTorch {time.perf_counter() - t1:.0f} s",
              file=sys.stderr, flush=True)

    cpp = {name: statistics.median(rd[name][0] for rd in cpp_rounds if name in rd) for name in cpp_rounds[0]}
    labels = {name: lab for name, (_, lab) in cpp_rounds[0].items()}
    py = {key: statistics.median(rd[key] for rd in py_rounds) for key in shapes}

    print(f"# xpand ({args.binary}) vs PyTorch {torch.__version__}, torch threads {torch.get_num_threads()}, "
          f"{args.rounds} alternating rounds, median")
    print("# PyTorch side: nn.Linear chains (bias=False), activation-first, fwd+bwd, input without grad (nanoGPT rows: as input_grad says)")
    print(f"# malloc: {args.malloc} on both sides (pinned: no mmap, trim_threshold 1 GiB, top_pad 64 MiB)")
    print("# xpand order: 0 = activation, 1 = weight, 2 = planned (planner's pick in 'picked')")
    hdr = f"# {'row':<50} {'picked':>10} {'xpand ms':>10} {'PyTorch ms':>11} {'xpand/PyT':>10}"
    print(hdr)
    for name in sorted(cpp, key=lambda n: (parse_name(n)[0], tuple(parse_name(n)[1].values()))):
        base, a = parse_name(name)
        if base != "BM_expanded":
            continue
        t_py = py[("exp", a["factor"], a["depth"], a["batch"])]
        print(f"  {name:<50} {labels[name]:>10} {cpp[name]:>10.3f} {t_py:>11.3f} {cpp[name] / t_py:>10.2f}")

    print("#")
    print("# nanoGPT MLP (c_fc 384->1536, GELU, c_proj 1536->384; expanded: depth 2, inner 2000; 2048 tokens)")
    print("# exp/dense: the row's time over the dense pair's time, on each side; PyTorch expanded = activation-first "
          "chain (order:1 row: PyTorch multiplies the factors first too)")
    print(f"# {'row':<45} {'xpand ms':>10} {'PyTorch ms':>11} {'xpand/PyT':>10} {'xpand exp/dense':>16} "
          f"{'PyT exp/dense':>14}")
    for ig in (0, 1):
        dense_name = f"BM_nanogpt_mlp_dense/input_grad:{ig}"
        dense_cpp, dense_py = cpp.get(dense_name), py[("mlp", "dense", ig)]
        mlp_rows = [(dense_name, "dense"), (f"BM_nanogpt_mlp/order:0/input_grad:{ig}", "activation"),
                    (f"BM_nanogpt_mlp/order:1/input_grad:{ig}", "weight"),
                    (f"BM_nanogpt_mlp/order:2/input_grad:{ig}", "activation")]
        for name, kind in mlp_rows:
            if name not in cpp or not dense_cpp:
                continue
            t_py = py[("mlp", kind, ig)]
            print(f"  {name:<45} {cpp[name]:>10.2f} {t_py:>11.2f} {cpp[name] / t_py:>10.2f} "
                  f"{cpp[name] / dense_cpp:>16.2f} {t_py / dense_py:>14.2f}")
    return 0


# --- --tables: the docs/PLANNER.md tables from a full run ----------------------------------------


def tables(path):
    ctx, rows = load_rows(path)
    ms = {name: median_ms(bs) for name, bs in rows.items()}
    lab = {name: bs[0].get("label", "") for name, bs in rows.items()}
    gf = {name: bs[0].get("GFLOP", 0.0) for name, bs in rows.items()}
    print(f"Context: {ctx.get('num_cpus')} CPUs, torch_num_threads {ctx.get('torch_num_threads')}, "
          f"library build {ctx.get('library_build_type')}, {ctx.get('date')}\n")

    print("| factor | depth | D | batch | act ms | weight ms | planned ms | picked | planned / best | "
          "pick / best | best / dense | act GFLOP | weight GFLOP | ok |")
    print("|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---|")
    fails = []
    for factor in (1, 4, 16, 100):
        for depth in (2, 3, 5):
            for batch in (1, 64, 4096):
                key = f"BM_expanded/factor:{factor}/depth:{depth}/batch:{batch}/order:"
                t = [ms.get(key + str(o)) for o in range(3)]
                if None in t:
                    continue
                best = min(t[0], t[1])
                ratio = t[2] / best
                dense = ms.get(f"BM_dense/dim:{layer_dim(factor)}/batch:{batch}")
                ga, gw = gf[key + "0"], gf[key + "1"]
                picked = lab[key + "2"]
                # The fixed-order row computing exactly what the planner picked (mixed: none).
                pick = {"activation": t[0], "weight": t[1]}.get(picked)
                pick_ratio = f"{pick / best:.2f}" if pick else "-"
                ok = ratio <= 1.10
                if not ok:
                    fails.append((ratio, factor, depth, batch, t, picked, pick_ratio))
                print(f"| {factor} | {depth} | {layer_dim(factor)} | {batch} | {t[0]:.3f} | {t[1]:.3f} | {t[2]:.3f} | "
                      f"{picked} | {ratio:.2f} | {pick_ratio} | {best / dense:.1f} | {ga:.4g} | {gw:.4g} | "
                      f"{'yes' if ok else '**NO**'} |")
    print(f"\nRows with planned > 1.10 x min(activation, weight): {len(fails)}")
    for ratio, factor, depth, batch, t, picked, pick_ratio in sorted(fails, reverse=True):
        print(f"- factor {factor}, depth {depth}, batch {batch}: planned ({picked}) {t[2]:.3f} ms vs "
              f"activation {t[0]:.3f} ms, weight {t[1]:.3f} ms -> {ratio:.2f}x (fixed row of the picked order: "
              f"{pick_ratio}x)")

    print("\n| row | ms | GFLOP/s | picked |")
    print("|---|---:|---:|---|")
    for name in sorted(ms, key=lambda n: (parse_name(n)[0], tuple(parse_name(n)[1].values()))):
        base = parse_name(name)[0]
        if base in ("BM_dense", "BM_collapse", "BM_lowrank"):
            b = rows[name][0]
            print(f"| {name} | {ms[name]:.3f} | {b.get('FLOP/s', 0) * 1e-9:.1f} | {lab[name]} |")

    print("\n| nanoGPT MLP row | ms | expanded/dense | GFLOP | GFLOP ratio | picked |")
    print("|---|---:|---:|---:|---:|---|")
    for ig in (0, 1):
        dense_name = f"BM_nanogpt_mlp_dense/input_grad:{ig}"
        dense = ms.get(dense_name)
        for name in [dense_name] + [f"BM_nanogpt_mlp/order:{o}/input_grad:{ig}" for o in range(3)]:
            if name in ms and dense:
                print(f"| {name} | {ms[name]:.1f} | {ms[name] / dense:.2f} | {gf[name]:.2f} | "
                      f"{gf[name] / gf[dense_name]:.3f} | {lab[name]} |")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binary", nargs="?", default="build/bench/bench_expanded")
    ap.add_argument("--rounds", type=int, default=3, help="alternating C++/PyTorch rounds (median over rounds)")
    ap.add_argument("--repeats", type=int, default=5, help="PyTorch timings per shape and round (median)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads on the PyTorch side")
    ap.add_argument("--malloc", choices=["pinned", "default"], default="pinned",
                    help="glibc malloc thresholds on both sides (see bench_expanded.cpp main)")
    ap.add_argument("--tables", metavar="JSON", help="print the docs/PLANNER.md tables from a full run's JSON")
    args = ap.parse_args()
    if args.tables:
        return tables(args.tables)
    return compare(args)


if __name__ == "__main__":
    sys.exit(main())
