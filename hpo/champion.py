"""Champion / challenger: a night's best model against the registered champion, on the night's data.

The champion is the version of a registered MLflow model (``nightly.model_name``) that carries the
alias ``champion`` (aliases, not the deprecated stages). After a night's search, the night's best
model (the *challenger*, registered as a new version by the search) and the champion are both
scored by the same code on **this night's test rows** — the champion is re-scored, never compared
by the number it had on its own night's data — on the experiment's metric with ``val_`` replaced
by ``test_``. Then :func:`decide`:

======================  ===========================================================  ====
decision                rule (improvement = challenger - champion, sign by mode)     exit
======================  ===========================================================  ====
``promoted``            no champion yet, or improvement > 0 and >= promote_margin       0
``kept``                0 <= improvement < promote_margin (champion kept, tolerated)    0
``no_improvement``      worse, but not beyond ``alert_regression`` (or no challenger)   4
``regressed``           worse by more than ``alert_regression``                         5
======================  ===========================================================  ====

``promoted`` moves the alias (not with ``--dry-run``). The decision, both scores, the metric and
the data fingerprint are tags on the night's parent run and on the challenger's model version.

Example:
    >>> decide(0.95, 0.93, "max", (0.01, False), None).decision
    'promoted'
    >>> decide(0.935, 0.93, "max", (0.01, False), None).decision
    'kept'
    >>> decide(0.80, 0.93, "max", (0.0, False), (10.0, True)).decision  # 14% worse, alert at 10%
    'regressed'
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

from hpo.config import Experiment, parse_margin
from hpo.errors import HpoConfigError

__all__ = ["ALIAS", "EXIT_NO_IMPROVEMENT", "EXIT_REGRESSED", "Verdict", "champion_version", "check_margins",
           "compared_on", "decide", "load_version", "model_name", "promotes", "record_decision", "score_model",
           "scores_of"]

ALIAS = "champion"
EXIT_NO_IMPROVEMENT = 4
EXIT_REGRESSED = 5
_EXIT = {"promoted": 0, "kept": 0, "no_improvement": EXIT_NO_IMPROVEMENT, "regressed": EXIT_REGRESSED}
# what score_model measures, by task (the metric's name without ``val_``)
_SCORES = {"classification": ("loss", "accuracy", "precision", "recall", "f1", "roc_auc"),
           "regression": ("loss", "mse", "mae", "r2")}


@dataclass
class Verdict:
    """How a challenger fared against the champion, and the exit code that says so."""

    decision: str
    challenger_score: float | None
    champion_score: float | None
    improvement: float | None
    needed: float

    @property
    def exit_code(self) -> int:
        return _EXIT[self.decision]

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "exit_code": self.exit_code}


def _amount(margin: tuple[float, bool], champion: float) -> float:
    value, relative = margin
    return value * abs(champion) if relative else value


def decide(challenger: float | None, champion: float | None, mode: str, margin: tuple[float, bool],
           alert: tuple[float, bool] | None) -> Verdict:
    """The decision for a challenger's and the champion's scores (``None``: there is none).

    A challenger that is missing or not finite (no completed trial, a diverged model) is never
    promoted; it counts as worse than any champion.

    Example:
        >>> decide(None, 0.9, "max", (0.0, False), None).decision
        'no_improvement'
        >>> decide(0.2, None, "min", (0.0, False), None).decision  # the first champion
        'promoted'
        >>> decide(0.31, 0.30, "min", (0.0, False), (0.05, False)).decision
        'no_improvement'
    """
    finite = challenger is not None and math.isfinite(challenger)
    if champion is None or not math.isfinite(champion):
        decision = "promoted" if finite else "no_improvement"
        return Verdict(decision, challenger, champion, None, 0.0)
    needed = _amount(margin, champion)
    if not finite:
        regressed = alert is not None
        return Verdict("regressed" if regressed else "no_improvement", challenger, champion, None, needed)
    assert challenger is not None
    improvement = challenger - champion if mode == "max" else champion - challenger
    if improvement > 0 and improvement >= needed:
        decision = "promoted"
    elif improvement >= 0:
        decision = "kept"
    elif alert is not None and -improvement > _amount(alert, champion):
        decision = "regressed"
    else:
        decision = "no_improvement"
    return Verdict(decision, challenger, champion, improvement, needed)


def promotes(exp: Experiment) -> bool:
    """Whether nights of ``exp`` compare and promote models (``nightly.promote``; ``auto``: the
    built-in task with one metric and its model logged).

    Raises:
        HpoConfigError: ``promote: true`` where no model can be compared, or a metric that cannot
            be re-scored on the test rows.
    """
    setting = exp.nightly.promote
    if setting is False:
        return False
    reasons = []
    if not exp.is_builtin:
        reasons.append("a custom trainable leaves no model to compare (only the built-in task does)")
    if len(exp.metrics) != 1:
        reasons.append("it compares on one metric, and this search has several")
    if not exp.tracking.enabled or not exp.tracking.log_model:
        reasons.append("the challenger must be logged to MLflow (tracking.enabled and tracking.log_model)")
    if reasons:
        if setting is True:
            raise HpoConfigError("nightly.promote", "can only be true where a model can be compared: "
                                 + "; ".join(reasons), True, "Set nightly.promote: false (or auto).")
        return False
    compared_on(exp)
    return True


def compared_on(exp: Experiment) -> str:
    """The test score compared: the experiment's metric with ``val_`` replaced by ``test_``."""
    metric = exp.metrics[0]
    known = tuple(dict.fromkeys(_SCORES["classification"] + _SCORES["regression"]))
    name = metric[4:] if metric.startswith("val_") else None
    if name not in known:
        raise HpoConfigError("metric", "must be a validation score the champion can be re-scored on (val_ + one "
                             f"of {', '.join(known)}) for nightly promotion", metric,
                             "Set nightly.promote: false to run nights without promotion.")
    return f"test_{name}"


def model_name(exp: Experiment) -> str:
    """The champion's registered model: ``nightly.model_name``, ``tracking.register_model`` or the name."""
    return exp.nightly.model_name or exp.tracking.register_model or exp.name


def scores_of(model: Any, ds: Any) -> dict[str, float]:
    """Scores of ``model`` (raw features in: a loaded ``model.pt`` or the logged MLflow model) on the
    test rows of ``ds``: the same code for the challenger and the champion. Classification: loss
    (plain cross-entropy), accuracy, macro precision/recall/F1, binary ROC-AUC; regression: loss
    (MSE over the test targets' variance), mse, mae (target units), r2."""
    import numpy as np
    import torch

    from hpo.train.loop import classification_metrics

    x = torch.from_numpy(np.asarray(ds.x_test, dtype=np.float32))
    with torch.no_grad():
        out = model(x).float()
    if ds.task == "classification":
        y = torch.from_numpy(np.asarray(ds.y_test)).long()
        loss = float(torch.nn.functional.cross_entropy(out, y))
        scores = classification_metrics(out, y, ds.num_classes)
        return {"test_loss": loss, **{f"test_{k}": v for k, v in scores.items()}}
    y = torch.from_numpy(np.asarray(ds.y_test, dtype=np.float32))
    resid = out.reshape(-1) - y
    mse = float((resid**2).mean())
    var = float(((y - y.mean()) ** 2).mean()) or 1.0
    return {"test_loss": mse / var, "test_mse": mse, "test_mae": float(resid.abs().mean()), "test_r2": 1 - mse / var}


def score_model(model: Any, ds: Any, key: str) -> float:
    """One test score of ``model`` on ``ds`` (NaN where the model's outputs are not finite)."""
    value = scores_of(model, ds).get(key)
    return float("nan") if value is None else float(value)


def record_decision(tracking_uri: str, name: str, verdict: Verdict, *, key: str, challenger_version: str | None,
                    champion_version: str | None, parent_run_id: str | None, night: str,
                    fingerprint: str | None, dry_run: bool) -> str | None:
    """Tag the night's parent run and the challenger's version with the decision, and move the
    ``champion`` alias on a promotion (not in a dry run). Idempotent: the same night again sets the
    same tags and alias. Returns the champion's version after."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    tags = {"hpo.decision": verdict.decision, "hpo.compared_on": key, "hpo.night": night,
            "hpo.challenger_score": _text(verdict.challenger_score),
            "hpo.champion_score": _text(verdict.champion_score),
            "hpo.champion_version_before": champion_version or "none", "hpo.data_fingerprint": fingerprint or "none",
            "hpo.dry_run": str(dry_run).lower()}
    if challenger_version is not None:
        for k, v in tags.items():
            client.set_model_version_tag(name, challenger_version, k, v)
    after = champion_version
    if verdict.decision == "promoted" and challenger_version is not None and not dry_run:
        client.set_registered_model_alias(name, ALIAS, challenger_version)
        after = challenger_version
    if parent_run_id is not None:
        from mlflow.entities import Metric, RunTag

        run_tags = {**tags, "hpo.registered_model": name, "hpo.challenger_version": challenger_version or "none",
                    "hpo.champion_version_after": after or "none"}
        now = int(time.time() * 1000)
        metrics = [Metric(f"{who}_{key}", float(v), now, 0) for who, v in
                   (("challenger", verdict.challenger_score), ("champion", verdict.champion_score))
                   if v is not None and math.isfinite(v)]
        client.log_batch(parent_run_id, metrics=metrics, tags=[RunTag(k, v) for k, v in run_tags.items()])
    return after


def champion_version(tracking_uri: str, name: str) -> str | None:
    """The version of ``name`` that carries the ``champion`` alias (None: no champion yet)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return str(MlflowClient(tracking_uri).get_model_version_by_alias(name, ALIAS).version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def load_version(tracking_uri: str, name: str, version: str) -> Any:
    """A registered version of the best model, as the search logged it (raw features in)."""
    import mlflow.pytorch
    import torch

    from hpo._compat.mlflow import fluent_tracking_uri

    with fluent_tracking_uri(tracking_uri):
        model = mlflow.pytorch.load_model(f"models:/{name}/{version}", map_location="cpu")
    if isinstance(model, torch.export.ExportedProgram):
        return model.module()
    try:
        model.eval()  # a pickled module; MLflow 3's default torch.export graph was exported in eval mode
    except NotImplementedError:  # and refuses eval() (torch 2.13)
        pass
    return model


def _text(value: float | None) -> str:
    return "none" if value is None else repr(float(value))


def check_margins(exp: Experiment) -> tuple[tuple[float, bool], tuple[float, bool] | None]:
    """``nightly.promote_margin`` and ``nightly.alert_regression``, parsed."""
    n = exp.nightly
    alert = None if n.alert_regression is None else parse_margin(n.alert_regression, "nightly.alert_regression")
    return parse_margin(n.promote_margin, "nightly.promote_margin"), alert
