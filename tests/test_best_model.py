"""The best model at a search's end: the best trial's own final model, kept by the trial and
loaded (not retrained), with the test scores the trial measured on those very weights; retrained
only when it is missing, and the log says so; logged to MLflow by a helper process, loadable."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import hpo
from hpo.champion import scores_of
from hpo.results import Results, TrialRecord
from hpo.train.best import drop_other_models, recover_best
from hpo.train.loop import fit
from hpo.train.model_file import load_model, model_payload, read_trial_scores, trial_model_files
from hpo.train.model_logger import ModelLogger
from hpo.train.trial import keep_final_model
from tests.conftest import _env

TASK = {"dataset": "wine", "epochs": 3}


def _trained(**config: Any) -> tuple[Any, dict[str, Any]]:
    run, history = fit({**TASK, "hidden": 16, **config}, threads=1)
    return run, history[-1]


def _record(trial_id: str, last: dict[str, Any], **config: Any) -> TrialRecord:
    metrics = {k: float(v) for k, v in last.items() if isinstance(v, (int, float))}
    return TrialRecord(trial_id, {"hidden": 16, **config}, metrics, "completed", steps=3)


class _FakeRay:
    """Stands in for ``ray`` in recover_best: counts the Ray tasks asked for and runs them here."""

    def __init__(self) -> None:
        self.tasks = 0

    def remote(self, **resources: Any) -> Any:
        fake = self

        def wrap(fn: Any) -> Any:
            class Remote:
                def remote(self, *args: Any) -> Any:
                    fake.tasks += 1
                    return fn(*args)

            return Remote()

        return wrap

    def get(self, value: Any) -> Any:
        return value


def test_a_trial_keeps_its_final_model_with_the_test_scores_of_those_weights(tmp_path):
    run, last = _trained()
    assert keep_final_model(run, str(tmp_path), "t1.2", last)
    record = read_trial_scores(tmp_path, "t1.2")
    assert record is not None and record["step"] == 3 and record["metrics"]["val_accuracy"] == last["val_accuracy"]
    model = load_model(trial_model_files(tmp_path, "t1.2")[0])
    # The kept file, loaded and scored by the champion's code, scores what the trial measured.
    assert scores_of(model, run.ds) == pytest.approx(record["test_metrics"], abs=1e-6)
    assert sorted(os.listdir(tmp_path / "trial_models")) == ["t1.2.json", "t1.2.pt"]  # no temporary file left


def test_the_best_trial_is_loaded_not_retrained_when_it_kept_its_model(tmp_path, monkeypatch):
    run, last = _trained()
    other, other_last = _trained(lr=0.3)
    keep_final_model(run, str(tmp_path), "best", last)
    keep_final_model(other, str(tmp_path), "other", other_last)
    fake = _FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    worse = {**other_last, "val_accuracy": -1.0}
    results = Results("s", ["val_accuracy"], ["max"], [_record("best", last), _record("other", worse, lr=0.3)],
                      str(tmp_path))
    info = recover_best(results, TASK, run.ds, {"cpu": 1}, tmp_path)
    assert info is not None and info["source"] == "trial" and fake.tasks == 0  # no Ray task, no training
    assert info["test_metrics"] == json.loads((tmp_path / "trial_models" / "best.json").read_text())["test_metrics"]
    assert Path(info["path"]).read_bytes() == (tmp_path / "trial_models" / "best.pt").read_bytes()
    assert json.loads((tmp_path / "best_model" / "best.json").read_text())["source"] == "trial"
    assert drop_other_models(tmp_path, "best") == 2
    assert sorted(os.listdir(tmp_path / "trial_models")) == ["best.json", "best.pt"]


def test_a_trial_restored_at_its_last_epoch_reports_that_model_as_its_last_result_and_keeps_it(tmp_path,
                                                                                               monkeypatch):
    """PBT copies a trial's final checkpoint into another trial (or a search resumes a trial whose
    training had ended): nothing is left to train. The trial ends with the copied model, evaluated,
    as its last result and its kept model, so the best-model step finds them matching (the trial
    used to end silently, its record keeping its result from before the copy)."""
    from ray import tune

    from hpo.train.best import kept_model
    from hpo.train.trial import _train_one
    from hpo.wire import KeepModels

    donor, donor_last = _trained()
    ckpt_dir = tmp_path / "ckpt"
    ckpt_dir.mkdir()
    torch.save(donor.state_dict(), ckpt_dir / "state.pt")
    monkeypatch.setattr(tune, "get_checkpoint", lambda: tune.Checkpoint.from_directory(str(ckpt_dir)))
    reports: list[tuple[int, dict[str, Any], bool]] = []

    def report(step: int, metrics: dict[str, Any], checkpoint: Any = None, last: bool = False) -> None:
        reports.append((step, metrics, last))

    run = _train_one({**TASK, "hidden": 16, "lr": 0.05}, None, 1, report, KeepModels(str(tmp_path), 3), "copy")
    assert run.epoch == 3 and run.train_time_s == donor.train_time_s  # no epoch trained
    assert [(step, last) for step, _, last in reports] == [(3, True)]
    reported = reports[0][1]
    val = {k: v for k, v in donor_last.items() if k.startswith("val_")}
    assert {k: v for k, v in reported.items() if k.startswith("val_")} == pytest.approx(val)  # the copied weights
    assert "train_loss" not in reported  # not a training epoch
    record = _record("copy", reported, lr=0.05)
    kept = kept_model(tmp_path, record)
    assert kept is not None and kept[1]["step"] == 3  # the best-model step takes it as the trial's own
    assert keep_final_model(donor, str(tmp_path), "donor", donor_last)
    donor_test = read_trial_scores(tmp_path, "donor")["test_metrics"]  # type: ignore[index]
    assert kept[1]["test_metrics"] == pytest.approx(donor_test)  # the same weights: the same test scores
    assert scores_of(load_model(kept[0]), donor.ds) == pytest.approx(donor_test, abs=1e-6)


@pytest.mark.parametrize("defect", ["missing", "saved at another step", "another attempt's"])
def test_a_best_trial_without_its_own_model_is_retrained_and_the_log_says_so(tmp_path, monkeypatch, caplog, defect):
    run, last = _trained()
    if defect != "missing":
        keep_final_model(run, str(tmp_path), "best", last)
        scores = tmp_path / "trial_models" / "best.json"
        record = json.loads(scores.read_text())
        if defect == "saved at another step":
            record["step"] = 2
        else:
            record["metrics"]["val_loss"] += 0.5
        scores.write_text(json.dumps(record))
    fake = _FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    results = Results("s", ["val_accuracy"], ["max"], [_record("best", last)], str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="hpo"):
        info = recover_best(results, TASK, run.ds, {"cpu": 1}, tmp_path)
    assert info is not None and info["source"] == "retrained" and fake.tasks == 1
    assert info["reproduced"] is True  # the same model again: same data, seed and threads on a CPU
    assert "the best trial best kept no final model" in caplog.text and "training it again" in caplog.text


@pytest.mark.slow  # processes that import MLflow and torch: ~20 s
def test_the_model_logger_logs_a_model_mlflow_loads_through_its_helper_or_without_it(tmp_path, caplog):
    import mlflow
    from mlflow.tracking import MlflowClient

    run, _ = _trained()
    path = tmp_path / "model.pt"
    torch.save(model_payload(run), path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    parent = client.create_run(client.create_experiment("e")).info.run_id
    raw = torch.as_tensor(run.ds.x_test, dtype=torch.float32)
    expected = load_model(path)(raw)
    for helper in ("answers", "died"):
        logger = ModelLogger()
        logger.start()  # as the search starts
        assert logger._proc is not None
        if helper == "died":
            logger._proc.kill()  # type: ignore[union-attr]
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="hpo"):
            model_uri = logger(uri, parent, {"path": str(path), "trial_id": "t"}, None)
        assert ("ended without an answer" in caplog.text) == (helper == "died")
        mlflow.set_tracking_uri(uri)
        try:
            loaded = mlflow.pytorch.load_model(model_uri)
        finally:
            mlflow.set_tracking_uri(None)
        torch.testing.assert_close(loaded(raw), expected)
    assert len(client.get_run(parent).outputs.model_outputs) == 2  # one logged model per way, on the parent run
    logger = ModelLogger()
    logger.start()
    with pytest.raises(RuntimeError, match="No such file|FileNotFoundError"):  # the helper's failure, raised here
        logger(uri, parent, {"path": str(tmp_path / "missing.pt"), "trial_id": "t"}, None)


@pytest.mark.slow  # MLflow and torch, and a process that imports MLflow: ~10 s
def test_a_model_saved_then_logged_is_logged_as_mlflow_pytorch_log_model_logs_it(tmp_path):
    """The helper saves, the driver logs (hpo.train.model_file): the logged model, its files, its
    MLmodel, the run's output and the registered version are those mlflow.pytorch.log_model gives."""
    import io
    import zipfile

    import mlflow
    import mlflow.pytorch
    import yaml
    from mlflow.tracking import MlflowClient

    from hpo._compat.mlflow import fluent_tracking_uri
    from hpo.train.model_file import _model_requirements, load_payload, log_saved_model, save_for_mlflow

    run, _ = _trained()
    path = tmp_path / "model.pt"
    torch.save(model_payload(run), path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("e")
    ours, theirs = (client.create_run(experiment).info.run_id for _ in range(2))
    info: dict[str, Any] = {"path": str(path)}
    saved = save_for_mlflow(dict(info), str(tmp_path / "saved"))
    our_uri = log_saved_model(uri, ours, saved, info, "ours")
    assert info["registered_model"] == "ours" and info["registered_version"] == "1"
    model, example = load_model(path), load_payload(path)["example"]
    with torch.no_grad():
        output = model(torch.as_tensor(example)).numpy()
    with fluent_tracking_uri(uri), mlflow.start_run(run_id=theirs):
        their_uri = mlflow.pytorch.log_model(
            model, name="best_model", signature=mlflow.models.infer_signature(example, output),
            input_example=example, registered_model_name="theirs", pip_requirements=_model_requirements()).model_uri

    def described(model_uri: str) -> tuple[dict[str, bytes], dict[str, Any]]:
        with fluent_tracking_uri(uri):
            local = mlflow.artifacts.download_artifacts(model_uri, dst_path=str(tmp_path / model_uri.split("/")[-1]))
        files = {str(p.relative_to(local)): p.read_bytes() for p in Path(local).rglob("*") if p.is_file()}
        mlmodel = yaml.safe_load(files.pop("MLmodel"))
        for key in ("artifact_path", "model_id", "model_uuid", "run_id", "utc_time_created"):  # which model
            mlmodel.pop(key)
        return files, mlmodel

    (our_files, our_mlmodel), (their_files, their_mlmodel) = described(our_uri), described(their_uri)
    assert our_files.keys() == their_files.keys()
    # every file byte for byte but torch.export's archive, which holds the exporting call's stack
    # and a random serialization id: its members alike, its weights and sample inputs byte for byte
    assert {k for k in our_files if our_files[k] != their_files[k]} <= {"data/model.pt2"}
    ours_pt2, theirs_pt2 = (zipfile.ZipFile(io.BytesIO(f["data/model.pt2"])) for f in (our_files, their_files))
    assert ours_pt2.namelist() == theirs_pt2.namelist()
    data = [n for n in ours_pt2.namelist() if n.startswith("model/data/")]
    assert data and all(ours_pt2.read(n) == theirs_pt2.read(n) for n in data)
    # the MLmodel but which model it is, with the size of the files the export wrote (as MLflow counts them)
    size_gap = len(our_files["data/model.pt2"]) - len(their_files["data/model.pt2"])
    assert our_mlmodel.pop("model_size_bytes") - their_mlmodel.pop("model_size_bytes") == size_gap
    assert our_mlmodel == their_mlmodel
    mine, other = (client.get_logged_model(u.split("/")[-1]) for u in (our_uri, their_uri))
    for attr in ("name", "status", "experiment_id", "model_type", "params"):
        assert getattr(mine, attr) == getattr(other, attr)
    assert (mine.source_run_id, other.source_run_id) == (ours, theirs)
    assert {k: v for k, v in mine.tags.items() if k != "mlflow.modelVersions"} == \
        {k: v for k, v in other.tags.items() if k != "mlflow.modelVersions"}
    assert [m.model_id for m in client.get_run(ours).outputs.model_outputs] == [mine.model_id]
    version = client.get_model_version("ours", "1")
    assert version.source == our_uri and version.run_id == ours
    raw = torch.as_tensor(run.ds.x_test, dtype=torch.float32)
    with fluent_tracking_uri(uri):
        torch.testing.assert_close(mlflow.pytorch.load_model(our_uri)(raw), model(raw))
    # the driver's half imports no torch (a process of its own logs the saved directory again)
    code = ("import sys\nfrom hpo.train.model_file import log_saved_model\n"
            f"print(log_saved_model({uri!r}, {ours!r}, {saved!r}, {{}}, None), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    logged_uri, torch_imported = out.stdout.split()[-2:]
    assert logged_uri.startswith("models:/") and torch_imported == "False"


def test_the_command_exits_with_its_code_after_every_other_exit_handler(tmp_path):
    # the command leaves without the interpreter's teardown: handlers registered while it ran
    # (Ray's, MLflow's) still run, and the exit code and the output are the command's
    code = ("import atexit, sys\n"
            "import hpo.cli as cli\n"
            "def command(argv):\n"
            "    atexit.register(lambda: print('handler ran', flush=True))\n"
            "    print('output', end='')\n"
            "    return 4\n"
            "cli._main = command\n"
            "sys.exit(cli.main())\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=_env(),
                          timeout=60)
    assert proc.returncode == 4 and proc.stdout == "outputhandler ran\n", proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize(("pack", "tracked"), [(3, False), (1, True)])
def test_the_best_model_is_the_best_trials_own_and_scores_as_the_trial_did(in_tmp, ray_address, pack, tracked):
    from hpo.train.data import DataSpec, load_dataset

    results = hpo.run(name=f"keep-{pack}", task=TASK, space={"lr": hpo.Grid([0.003, 0.01, 0.03]),
                                                              "hidden": hpo.Grid([8, 16])},
                      metric="val_accuracy", mode="max", strategy="grid", pack=pack, max_concurrent=2,
                      address=ray_address, tracking={"enabled": tracked})
    best = results.best_trial
    info = results.best_model_info
    assert best is not None and info is not None and results.count("completed") == 6
    assert ("." in best.trial_id) == (pack > 1)  # packed: each configuration is a trial of its own
    assert info["source"] == "trial" and "reproduced" not in info  # taken from the trial, not retrained
    ds = load_dataset(DataSpec.from_config(TASK))
    # The file the search kept for the best trial scores, loaded here, what that trial measured
    assert scores_of(load_model(info["path"]), ds) == pytest.approx(results.test_metrics, abs=1e-6)
    kept = sorted(os.listdir(Path(results.storage_path) / "trial_models"))
    assert kept == [f"{best.trial_id}.json", f"{best.trial_id}.pt"]  # the others' went at the end
    if tracked:
        import mlflow

        mlflow.set_tracking_uri(f"sqlite:///{in_tmp / 'mlflow.db'}")
        try:
            logged = mlflow.pytorch.load_model(info["mlflow_model_uri"])
        finally:
            mlflow.set_tracking_uri(None)
        raw = torch.as_tensor(ds.x_test, dtype=torch.float32)
        torch.testing.assert_close(logged(raw), load_model(info["path"])(raw))

