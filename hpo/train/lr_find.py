"""``hpo lr-find``: an exponentially growing learning-rate range test that proposes search bounds.

The task's model trains for ``steps`` batches while the learning rate grows from ``min_lr``
to ``max_lr`` by a constant factor per batch; the loss is smoothed (a bias-corrected moving
average) and the test stops once it exceeds ``diverge`` times its minimum. The proposal:
``low`` a tenth of the rate where the smoothed loss falls fastest, ``high`` the rate of the
lowest smoothed loss (where larger steps stop helping), log-scaled.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass
class LrFindResult:
    """The range test's curve and the bounds it proposes for ``lr``."""

    lrs: list[float] = field(repr=False)
    losses: list[float] = field(repr=False)  # smoothed
    steepest_lr: float
    min_loss_lr: float
    low: float
    high: float

    def space_yaml(self) -> str:
        return f"lr: {{type: float, low: {self.low:.3g}, high: {self.high:.3g}, log: true}}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def plot(self, path: str) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(self.lrs, self.losses)
        ax.set_xscale("log")
        ax.axvspan(self.low, self.high, alpha=0.2, color="tab:green", label="proposed lr range")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("smoothed training loss")
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)


def center_config(space: Any) -> dict[str, Any]:
    """A representative config of a space: geometric/arithmetic middles, first choices, fixed values."""
    from hpo.params import Float, Int

    cfg: dict[str, Any] = {}
    for name, p in space.params.items():
        if not space.is_active(name, cfg):
            continue
        if isinstance(p, (Float, Int)):
            mid = math.sqrt(p.low * p.high) if p.log else (p.low + p.high) / 2
            cfg[name] = int(round(mid)) if isinstance(p, Int) else mid
        else:
            cfg[name] = (p.values() or [None])[0]
    return cfg


def lr_find(config: dict[str, Any], data: Any = None, *, min_lr: float = 1e-6, max_lr: float = 1.0,
            steps: int = 100, diverge: float = 4.0, threads: int | None = None) -> LrFindResult:
    """Run the range test for the built-in task ``config`` in this process.

    Example:
        >>> r = lr_find({"dataset": "iris", "optimizer": "adam", "hidden": 16}, steps=60)
        >>> r.low < r.high
        True
    """
    import torch

    from hpo.train.loop import TaskRun

    if not 0 < min_lr < max_lr:
        from hpo.errors import HpoConfigError

        raise HpoConfigError("--min-lr", "must be > 0 and below --max-lr", f"{min_lr} (max {max_lr})")
    run = TaskRun({**config, "schedule": "constant", "lr": min_lr, "cv_folds": 0}, data, threads)
    t = run.trainers[0]
    factor = (max_lr / min_lr) ** (1 / max(1, steps - 1))
    gen = torch.Generator().manual_seed(run.cfg.seed)
    n, bs = len(t.x_tr), run.cfg.batch_size
    lrs, losses = [], []
    avg, best, lr = 0.0, math.inf, min_lr
    t.model.train()
    perm, pos = torch.randperm(n, generator=gen), 0
    for i in range(steps):
        if pos >= n:
            perm, pos = torch.randperm(n, generator=gen), 0
        idx = perm[pos : pos + bs]
        pos += bs
        for g in t.optimizer.param_groups:
            g["lr"] = lr
        t.optimizer.zero_grad(set_to_none=True)
        loss = t._loss(t.x_tr[idx], t.y_tr[idx])
        value = float(loss.detach())
        if not math.isfinite(value):
            break
        loss.backward()
        t.optimizer.step()
        avg = 0.98 * avg + 0.02 * value
        smooth = avg / (1 - 0.98 ** (i + 1))
        lrs.append(lr)
        losses.append(smooth)
        best = min(best, smooth)
        if i > 10 and smooth > diverge * best:
            break
        lr *= factor
    if len(losses) < 5:
        raise RuntimeError(f"the loss diverged within {len(losses)} steps from lr {min_lr}: lower --min-lr")
    arr, log_lr = np.array(losses), np.log(lrs)
    i_min = int(arr.argmin())
    grads = np.gradient(arr[: i_min + 1], log_lr[: i_min + 1]) if i_min >= 2 else np.array([0.0])
    i_steep = int(grads.argmin())
    steepest, min_loss_lr = lrs[i_steep], lrs[i_min]
    high = min_loss_lr
    low = min(steepest / 10, high / 10)
    return LrFindResult(lrs, losses, steepest, min_loss_lr, low, high)
