"""`hpo schedule`: each target's output checked by the tool that reads it — croniter for crontab
lines and GitHub's cron, `systemd-analyze verify` and `calendar` for the units, kubernetes-validate
for the CronJob and its RBAC, the RayJob CRD's schema for the RayJob — plus `crontab` itself for
--install, and the errors for bad input (exit 2, nothing written)."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from croniter import croniter

from hpo.cli import main
from hpo.schedule import on_calendar, utc_cron
from tests.kuberay import crd_schema

ROOT = Path(__file__).resolve().parent.parent
HPO = Path(sys.executable).with_name("hpo")


@pytest.fixture()
def exp(tmp_path: Path) -> Path:
    path = tmp_path / "project" / "nightly.yaml"
    path.parent.mkdir()
    shutil.copy(ROOT / "examples" / "nightly.yaml", path)
    return path


def schedule(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["schedule", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cron_line_parses_and_runs_hpo_nightly_with_absolute_paths(exp, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    code, out, _ = schedule(capsys, str(exp), "--cron", "*/30 1-3 * * mon-fri", "--target", "cron",
                            "--tz", "Europe/Berlin")
    assert code == 0
    lines = [line for line in out.splitlines() if line and not line.startswith("#")]
    assert lines[0] == "CRON_TZ=Europe/Berlin"
    fields, command = lines[1].split(" ", 5)[:5], lines[1].split(" ", 5)[5]
    assert croniter.is_valid(" ".join(fields)) and " ".join(fields) == "*/30 1-3 * * mon-fri"
    words = shlex.split(command)
    assert words[:3] == ["cd", str(exp.parent), "&&"]
    assert any(w.startswith("PATH=") and str(HPO.parent) in w for w in words)
    assert "MLFLOW_TRACKING_URI=http://mlflow.internal:5000" in words
    i = words.index("nightly")
    assert Path(words[i - 1]).is_absolute() and Path(words[i - 1]).exists() and words[i + 1] == str(exp)
    assert words[-3:] == [">>", str(exp.parent / "nightly-iris.nightly.log"), "2>&1"]
    assert "--date" not in words  # hpo nightly takes today in nightly.timezone; its own lock guards overlaps


@pytest.mark.skipif(shutil.which("crontab") is None, reason="no `crontab` command (Debian package `cron`)")
def test_cron_install_merges_into_the_real_crontab_idempotently(exp, capsys):
    before = subprocess.run(["crontab", "-l"], capture_output=True, text=True)
    try:
        subprocess.run(["crontab", "-"], input=(before.stdout if before.returncode == 0 else "")
                       + "MAILTO=''\n17 4 * * * /bin/true # someone else's job\n", text=True, check=True)
        for cron in ("0 2 * * *", "0 2 * * *", "15 3 * * *"):
            code, out, _ = schedule(capsys, str(exp), "--cron", cron, "--target", "cron", "--install")
            assert code == 0 and "installed" in out
        table = subprocess.run(["crontab", "-l"], capture_output=True, text=True, check=True).stdout
        assert table.count(f"# >>> hpo schedule {exp} >>>") == 1 and "\n15 3 * * * cd " in table
        assert "0 2 * * * cd" not in table and "17 4 * * * /bin/true # someone else's job" in table
    finally:
        if before.returncode == 0:
            subprocess.run(["crontab", "-"], input=before.stdout, text=True, check=True)
        else:
            subprocess.run(["crontab", "-r"], capture_output=True)


def _calendar_elapses(spec: str, n: int) -> list[dt.datetime]:
    out = subprocess.run(["systemd-analyze", "calendar", "--iterations", str(n), spec], capture_output=True,
                         text=True, check=True, env={**os.environ, "TZ": "UTC"}).stdout
    stamps = re.findall(r"(?:Next elapse|Iter\. #\d+): \w+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC", out)
    return [dt.datetime.fromisoformat(s).replace(tzinfo=dt.timezone.utc) for s in stamps]


needs_systemd = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="no systemd-analyze (Debian package `systemd`)")


@needs_systemd
@pytest.mark.parametrize(("cron", "tz"), [
    ("0 2 * * *", None),
    ("0 5 * * *", "Europe/Berlin"),  # not at 02:00-03:00: on DST change days cron implementations differ
    ("*/20 9-17 * * mon-fri", "America/New_York"),
    ("5,35 3 1,15 jan,jul-sep *", None),
    ("0 22 * * sat,sun", "Asia/Kolkata"),
    ("30 4 */10 * *", "Australia/Sydney"),
    ("0 0 * * 0", None),
    ("0 2 * * 7", None),
])
def test_on_calendar_elapses_where_croniter_fires(cron, tz):
    spec = on_calendar(cron, tz)
    zone = ZoneInfo(tz or "UTC")
    it = croniter(cron, dt.datetime.now(zone))
    expected = [it.get_next(dt.datetime).astimezone(dt.timezone.utc) for _ in range(4)]
    assert _calendar_elapses(spec, 4) == expected, spec


def test_on_calendar_refuses_cron_or_semantics_of_both_day_fields():
    with pytest.raises(ValueError, match="day-of-month and day-of-week"):
        on_calendar("0 2 1 * mon")


@needs_systemd
def test_systemd_units_pass_systemd_analyze_verify(exp, capsys, tmp_path):
    units = tmp_path / "units"
    code, out, _ = schedule(capsys, str(exp), "--cron", "0 2 * * *", "--target", "systemd", "--tz", "Europe/Berlin",
                            "--install", "--out", str(units))
    assert code == 0 and "enable --now hpo-nightly-nightly-iris.timer" in out
    service, timer = units / "hpo-nightly-nightly-iris.service", units / "hpo-nightly-nightly-iris.timer"
    text = service.read_text()
    assert "Type=oneshot" in text and f"WorkingDirectory={exp.parent}" in text
    assert f"ExecStart={HPO} nightly {exp}" in text
    assert "OnCalendar=*-*-* 02:00:00 Europe/Berlin" in timer.read_text() and "Persistent=true" in timer.read_text()
    verify = subprocess.run(["systemd-analyze", "verify", "--man=no", str(service), str(timer)],
                            capture_output=True, text=True)
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    # and verify does reject a broken unit, so the pass above means something
    service.write_text(text.replace(str(HPO), "/nonexistent/hpo"))
    assert subprocess.run(["systemd-analyze", "verify", "--man=no", str(service), str(timer)],
                          capture_output=True).returncode != 0


def _k8s_docs(exp: Path, capsys: pytest.CaptureFixture[str], out_dir: Path) -> list[dict]:
    code, out, _ = schedule(capsys, str(exp), "--cron", "0 2 * * *", "--target", "kubernetes", "--tz", "Europe/Berlin",
                            "--install", "--out", str(out_dir), "--image", "registry.example/hpo:1")
    assert code == 0 and "kubectl apply" in out
    return [d for f in sorted(out_dir.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text())]


def test_kubernetes_manifests_validate_against_their_schemas(exp, capsys, tmp_path, monkeypatch):
    import kubernetes_validate

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    docs = _k8s_docs(exp, capsys, tmp_path / "k8s")
    kinds = {d["kind"]: d for d in docs}
    assert sorted(kinds) == ["CronJob", "RayJob", "Role", "RoleBinding", "ServiceAccount"]
    for d in docs:
        if d["kind"] != "RayJob":
            kubernetes_validate.validate(d, "1.33.0", strict=True)  # raises on an invalid manifest
    spec = kinds["CronJob"]["spec"]
    assert spec["schedule"] == "0 2 * * *" and spec["timeZone"] == "Europe/Berlin"
    assert spec["concurrencyPolicy"] == "Forbid" and spec["startingDeadlineSeconds"] > 0
    assert spec["successfulJobsHistoryLimit"] and spec["failedJobsHistoryLimit"]
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == kinds["ServiceAccount"]["metadata"]["name"]
    assert {"create", "get"} <= set(kinds["Role"]["rules"][0]["verbs"]) and kinds["Role"]["rules"][0]["resources"] == [
        "rayjobs"]
    container = pod["containers"][0]
    assert container["image"] == "registry.example/hpo:1"
    compile(container["command"][2], "submit-rayjob", "exec")  # the pod's submitter is valid Python
    env = {e["name"]: e["value"] for e in container["env"]}
    assert json.loads(env["HPO_RAYJOB"]) == kinds["RayJob"]
    rayjob = kinds["RayJob"]
    assert rayjob["apiVersion"] == "ray.io/v1"
    assert rayjob["spec"]["entrypoint"] == 'hpo nightly nightly.yaml --date "$(TZ=Europe/Berlin date +%F)"'
    assert env["HPO_DATE_EXPR"] in rayjob["spec"]["entrypoint"]
    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow:5000"} in head["env"]


def test_rayjob_validates_against_the_kuberay_crd_schema(exp, capsys, tmp_path):
    import jsonschema

    schema = crd_schema("RayJob")
    rayjob = next(d for d in _k8s_docs(exp, capsys, tmp_path / "k8s") if d["kind"] == "RayJob")
    # OpenAPI v3 schemas are JSON Schema draft 4 with extensions (x-kubernetes-*, which it ignores)
    jsonschema.Draft4Validator.check_schema(schema)
    validator = jsonschema.Draft4Validator(schema)
    validator.validate(rayjob)
    with pytest.raises(jsonschema.ValidationError):  # the schema does check: a wrong type is caught
        validator.validate({**rayjob, "spec": {**rayjob["spec"], "backoffLimit": "zero"}})


@pytest.mark.parametrize(("tz", "utc", "warns"), [
    (None, "0 2 * * mon-fri", False),
    ("Asia/Tokyo", "0 17 * * 0-4", False),  # 02:00 Mon-Fri in Tokyo is 17:00 Sun-Thu in UTC
    ("Asia/Kolkata", "30 20 * * 0-4", False),
    ("Europe/Berlin", None, True),  # daylight-saving time: the offset of the next run, and a warning
])
def test_github_workflow_runs_on_the_utc_expression(exp, capsys, tmp_path, tz, utc, warns):
    args = ["--tz", tz] if tz else []
    code, out, err = schedule(capsys, str(exp), "--cron", "0 2 * * mon-fri", "--target", "github-actions", *args)
    assert code == 0
    flow = yaml.safe_load(out)
    cron = flow["on"]["schedule"][0]["cron"]
    assert croniter.is_valid(cron) and "workflow_dispatch" in flow["on"]
    if utc:
        assert cron == utc
    else:  # next run in Berlin == next run of the UTC expression
        berlin = croniter("0 2 * * mon-fri", dt.datetime.now(ZoneInfo(tz))).get_next(dt.datetime)
        assert croniter(cron, dt.datetime.now(dt.timezone.utc)).get_next(dt.datetime) == berlin
    assert ("daylight-saving" in err) == warns
    if tz:
        assert "GitHub Actions schedules run in UTC only" in err and repr(cron) in err
    steps = flow["jobs"]["nightly"]["steps"]
    runs = " ".join(s.get("run", "") for s in steps)
    assert steps[0]["uses"].startswith("actions/checkout") and steps[1]["uses"].startswith("actions/setup-python")
    assert runs.index("torch==2.13.0") < runs.index("pip install .") < runs.index("hpo nightly nightly.yaml")


def test_utc_cron_refuses_a_shift_it_cannot_express():
    with pytest.raises(ValueError, match="day-of-month"):
        utc_cron("0 2 1 * *", "Asia/Tokyo")  # the 1st at 02:00 in Tokyo is the last day of a month in UTC
    with pytest.raises(ValueError, match="two UTC days"):
        utc_cron("0 8,20 * * *", "Asia/Tokyo")
    assert utc_cron("*/10 * * * *", "Europe/Berlin") == ("*/10 * * * *", None)  # hourly: the same in every zone
    assert utc_cron("0 23 * * sun", "America/Phoenix") == ("0 6 * * 1", None)  # UTC-7 all year: Monday in UTC


def test_show_next_prints_the_runs_croniter_computes(exp, capsys):
    code, out, _ = schedule(capsys, str(exp), "--cron", "15 2 * * sat", "--tz", "Europe/Berlin", "--show-next", "5")
    assert code == 0
    times = [dt.datetime.fromisoformat(line) for line in out.splitlines()]
    it = croniter("15 2 * * sat", times[0] - dt.timedelta(minutes=1))
    assert len(times) == 5 and times == [it.get_next(dt.datetime) for _ in range(5)]
    assert all(t.tzinfo and t.astimezone(ZoneInfo("Europe/Berlin")).hour == 2 for t in times)
    assert all(t.utcoffset() == t.astimezone(ZoneInfo("Europe/Berlin")).utcoffset() for t in times)


@pytest.mark.parametrize(("args", "names"), [
    (["--cron", "61 2 * * *", "--target", "cron"], ["--cron", "minute", "'61'"]),
    (["--cron", "0 2 * *", "--target", "cron"], ["--cron", "4 field(s)", "'0 2 * *'"]),
    (["--cron", "0 2 * * mon-xyz", "--target", "systemd"], ["--cron", "day-of-week", "'mon-xyz'"]),
    (["--cron", "0 2 31 2 *", "--target", "systemd"], ["--cron", "real date"]),
    (["--cron", "0 2 * * *", "--target", "kubernetes", "--tz", "Mars/Olympus"], ["--tz", "'Mars/Olympus'"]),
    (["--cron", "0 2 * * *", "--target", "windows"], ["--target", "'windows'"]),
])
def test_bad_input_exits_2_naming_key_and_value_and_writes_nothing(exp, capsys, tmp_path, args, names):
    out_dir = tmp_path / "out"
    code, out, err = schedule(capsys, str(exp), *args, "--install", "--out", str(out_dir))
    assert code == 2 and out == "" and not out_dir.exists()
    assert all(n in err for n in names), err


def test_bad_experiment_file_fails_before_anything(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "examples" / "nightly.yaml").read_text().replace("metric: val_accuracy", "metric: 3"))
    code, out, err = schedule(capsys, str(bad), "--cron", "0 2 * * *", "--target", "cron", "--show-next", "2")
    assert code == 2 and out == "" and "metric" in err
