"""The training engine against a minimal hand-written PyTorch loop, one epoch at a time.

    python -m benchmarks.engine [--quick] [--epochs N] [--out DIR]

Digits MLP (two hidden layers of 128, ReLU), Adam, batch 64, one thread, same process, same
data. An "epoch" is what a trial does between two reports: a shuffled pass over the training
part and the validation metrics. The engine's epoch is one step of ``TaskRun.epochs()`` (so it
includes macro F1/precision/recall, the cost metrics and the metrics dict); the hand loop
computes validation loss and accuracy only. Epochs alternate between the two after a warm-up,
so drift on a shared machine hits both; the table reports medians and their ratio (target:
engine within 1.2x of the hand loop).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

CONFIG = {"dataset": "digits", "model": "mlp", "hidden": 128, "depth": 2, "batch_size": 64, "optimizer": "adam",
          "lr": 1e-3, "seed": 0}


def _hand_loop(split: Any) -> Any:
    import torch
    from torch import nn

    torch.manual_seed(0)
    x_tr, y_tr, x_val, y_val = (torch.from_numpy(a) for a in (split.x_train, split.y_train, split.x_val,
                                                               split.y_val))
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)

    def epoch() -> dict[str, float]:
        model.train()
        perm = torch.randperm(len(x_tr), generator=gen)
        total = 0.0
        for i in range(0, len(x_tr), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x_tr[idx]), y_tr[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        model.eval()
        with torch.no_grad():
            out = model(x_val)
            return {"train_loss": total / len(x_tr), "val_loss": float(nn.functional.cross_entropy(out, y_val)),
                    "val_accuracy": float((out.argmax(1) == y_val).float().mean())}

    return epoch


def measure(epochs: int, warmup: int = 3) -> dict[str, Any]:
    import torch

    from hpo.train.data import load_dataset
    from hpo.train.loop import TaskRun

    torch.set_num_threads(1)
    data = load_dataset("digits")
    total = warmup + epochs
    engine_iter = TaskRun({**CONFIG, "epochs": total}, data, threads=1).epochs()
    hand = _hand_loop(data.splits(0)[0])
    times: dict[str, list[float]] = {"engine": [], "hand": []}
    for i in range(total):
        order = [("engine", lambda: next(engine_iter)), ("hand", hand)]
        for name, step in order if i % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            step()
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"epochs": epochs, "median_s": med, "ratio": med["engine"] / med["hand"], "times_s": times}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="10 epochs each instead of 60")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)
    epochs = args.epochs or (10 if args.quick else 60)
    res = measure(epochs)
    res["machine"] = {"cpus": __import__("os").cpu_count(), "platform": platform.platform(),
                      "python": platform.python_version(), "torch": __import__("torch").__version__}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "engine_quick" if args.quick else "engine"
    (out / f"{stem}.json").write_text(json.dumps(res, indent=2))
    _plot(res, out / f"{stem}.png")
    print(f"one epoch of the digits MLP (hidden 128, batch 64, 1 thread), median of {epochs}:")
    print(f"  {'loop':<8}{'median ms':>10}")
    for k in ("hand", "engine"):
        print(f"  {k:<8}{res['median_s'][k] * 1000:>10.2f}")
    print(f"  engine / hand = {res['ratio']:.3f} (target <= 1.2)")
    return res


def _plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.boxplot([[t * 1000 for t in res["times_s"][k]] for k in ("hand", "engine")])
    ax.set_xticks([1, 2], ["hand-written loop", "hpo engine"])
    ax.set_ylabel("ms per epoch")
    ax.set_title(f"digits MLP epoch: engine/hand = {res['ratio']:.2f}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
