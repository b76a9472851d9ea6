#!/usr/bin/python3
"""Checks one exported model against its run (tests/cli/export.sh):
    export_check.py RUN.h5 MODEL.h5 MODEL.pt PRED.h5 EVAL.json EVAL_RUN.json
- MODEL.h5 and MODEL.pt hold the same state dict and architecture; torch.load reads the .pt;
- a PyTorch module built from each file alone (analysis/xpand_torch.py) predicts, on every test
  sample, what `xpand eval` predicted (PRED.h5), its accuracy is the run's recorded test_acc
  exactly and its mean loss the recorded test_loss to 1e-5;
- the inputs come from outside xpand: images from the dataset's IDX files normalised with the
  file's constants (Model.normalize), token windows from PRED.h5 checked against the corpus through
  the file's vocabulary;
- an MLP also runs through docs/FORMAT.md's numpy loader, executed as the page prints it;
- `xpand eval --json` of the model file and of the run file say the same as the run."""
import gzip
import json
import os
import sys

import h5py
import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "analysis"))
import xpand_h5  # noqa: E402
import xpand_torch  # noqa: E402


def idx(path):
    """An IDX file (gzip or not) as a numpy array, read here without xpand's reader."""
    for p in (path, path + ".gz"):
        if os.path.exists(p):
            data = (gzip.open if p.endswith(".gz") else open)(p, "rb").read()
            ndim = data[3]
            dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
            assert data[2] == 0x08, f"{p}: not uint8"
            return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)
    raise FileNotFoundError(path)


def main(run_path, h5_path, pt_path, pred_path, eval_json, eval_run_json):
    with h5py.File(run_path, "r") as f:
        rec_acc, rec_loss = float(f["metrics/eval/test_acc"][-1]), float(f["metrics/eval/test_loss"][-1])
        rec_step = int(f["metrics/eval/step"][-1])
        source = f.attrs["dataset_source"]
        config = xpand_h5.load_config(f.attrs["config"])
    raw_pt = torch.load(pt_path)
    assert set(raw_pt) == {"state_dict", "architecture"}, raw_pt.keys()
    a, b = xpand_h5.load_model(h5_path), xpand_h5.load_model(pt_path)
    assert list(a.state_dict) == list(b.state_dict), (list(a.state_dict), list(b.state_dict))
    for k in a.state_dict:
        assert a.state_dict[k].dtype == b.state_dict[k].dtype, k
        assert np.array_equal(a.state_dict[k], b.state_dict[k]), k
    assert a.arch == b.arch, (a.arch, b.arch)
    assert a.step == rec_step, (a.step, rec_step)
    with h5py.File(pred_path, "r") as p:
        want_pred, label = p["pred"][()], p["label"][()]
        tokens = p["input"][()] if "input" in p else None
    if a.arch["model"] == "gpt":
        x = torch.from_numpy(tokens)
        vocab = bytes(a.arch["vocab"])
        corpus = open(source, "rb").read()
        for row, nxt in zip(tokens[:8], label[:8]):
            text = bytes(vocab[t] for t in row) + bytes([vocab[nxt[-1]]])
            assert text in corpus, text  # the windows are the corpus through the file's vocabulary
    else:
        images = idx(os.path.join(source, "t10k-images-idx3-ubyte"))
        labels = idx(os.path.join(source, "t10k-labels-idx1-ubyte")).astype(np.int64)
        n = config["data"]["eval_max_samples"] or len(labels)
        images, labels = images[:n], labels[:n]
        assert np.array_equal(labels, label), "labels differ from the IDX file's"
        x = torch.from_numpy(a.normalize(images).reshape(len(images), *a.arch["input_shape"]))
    batch = config["data"]["eval_batch_size"]
    for path, model in ((h5_path, a), (pt_path, b)):
        net = xpand_torch.build(model)
        with torch.no_grad():
            logits = torch.cat([net(x[i:i + batch]) for i in range(0, len(x), batch)])
        pred = logits.argmax(-1).numpy()
        assert pred.shape == want_pred.shape, (pred.shape, want_pred.shape)
        diff = int((pred != want_pred).sum())
        assert diff == 0, f"{path}: {diff} of {pred.size} predictions differ from xpand eval's"
        y = torch.from_numpy(label)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).double(), y.reshape(-1)).item()
        acc = (pred == label).sum() / pred.size
        assert acc == rec_acc, f"{path}: accuracy {acc!r}, the run recorded {rec_acc!r}"
        assert abs(loss - rec_loss) <= 1e-5, f"{path}: loss {loss!r}, the run recorded {rec_loss!r}"
        print(f"{os.path.basename(path)}: {pred.size} predictions as xpand eval's, accuracy {acc} "
              f"(recorded {rec_acc}), loss {loss:.8f} (recorded {rec_loss:.8f})")
    if a.arch["model"] == "mlp":  # docs/FORMAT.md's numpy loader, run as the page prints it
        doc = open(os.path.join(HERE, "..", "..", "docs", "FORMAT.md")).read()
        start = doc.index("import h5py, numpy as np")
        code = doc[start:doc.index("```", start)].replace('"model.h5"', repr(h5_path))
        env = {}
        exec(code, env)
        agree = (env["forward"](images).argmax(1) == want_pred).mean()
        assert agree >= 0.999, f"docs/FORMAT.md's numpy forward agrees on only {agree:.4f} of the samples"
        print(f"docs/FORMAT.md's numpy forward: agrees with xpand on {agree:.4%} of the samples")
    for path in (eval_json, eval_run_json):
        e = json.loads(open(path).read())
        assert e["acc"] == rec_acc and abs(e["loss"] - rec_loss) <= 1e-5 and e["step"] == rec_step, (path, e)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
