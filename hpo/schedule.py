"""``hpo schedule``: the job that runs ``hpo nightly`` on a cron schedule, for cron, systemd,
Kubernetes (a CronJob submitting a KubeRay RayJob) or GitHub Actions.

The cron expression is parsed and checked by ``croniter`` (standard five fields; a bad one is an
:class:`~hpo.errors.HpoConfigError` naming the field at fault); each target's text is built from
croniter's expansion of the fields, never by parsing the expression by hand. Nothing here imports
Ray, torch or MLflow.

Example:
    >>> on_calendar("*/15 9-17 * * mon-fri", "Europe/Berlin")
    'Mon..Fri *-*-* 09..17:00,15,30,45:00 Europe/Berlin'
    >>> utc_cron("0 2 * * *", "Asia/Kolkata")[0]
    '30 20 * * *'
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpo.config import Experiment, check_timezone
from hpo.errors import HpoConfigError

__all__ = ["DEFAULT_IMAGE", "FIELDS", "TARGETS", "Schedule", "build_schedule", "check_cron", "hpo_command",
           "install", "merge_crontab", "next_runs", "on_calendar", "utc_cron"]

TARGETS = ("cron", "systemd", "kubernetes", "github-actions")
FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")
# Replace with an image that has hpo, your trainable's code and the experiment under /home/ray/project.
DEFAULT_IMAGE = "rayproject/ray:2.60.0-py311"
K8S_WORKDIR = "/home/ray/project"
_MACROS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
           "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}
_DAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")
_NAMES = "jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec|sun|mon|tue|wed|thu|fri|sat"
_RULE = "must be a standard five-field cron expression (minute hour day-of-month month day-of-week)"


@dataclass
class Schedule:
    """A target's job: ``files`` (name -> text, in the order to show them), ``notes`` (for stderr)
    and, for cron, the ``crontab`` block."""

    target: str
    cron: str  # the expression the target runs on (for GitHub Actions: in UTC)
    files: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# ---- the cron expression -----------------------------------------------------------------------

def check_cron(expr: Any, key: str = "--cron") -> str:
    """``expr`` (a macro like ``@daily`` expanded) if croniter accepts it as a standard
    five-field expression that fires at all, else an error naming the field at fault.

    Example:
        >>> check_cron("0 2 * * MON-FRI")
        '0 2 * * MON-FRI'
        >>> check_cron("61 2 * * *")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        hpo.errors.HpoConfigError: --cron: the minute field ...
    """
    from croniter import CroniterBadDateError, croniter

    if not isinstance(expr, str) or not expr.strip():
        raise HpoConfigError(key, _RULE, expr)
    text = _MACROS.get(expr.strip().lower(), " ".join(expr.split()))
    parts = text.split(" ")
    if len(parts) != 5:
        raise HpoConfigError(key, f"{_RULE}: {len(parts)} field(s) given", expr)
    for i, (name, part) in enumerate(zip(FIELDS, parts)):
        probe = ["*"] * 5
        probe[i] = part
        # Numbers, names, lists, ranges and steps only: croniter's extensions (L, W, #, ?, H) are
        # not accepted by cron, systemd, Kubernetes and GitHub Actions alike.
        plain = re.fullmatch(r"[0-9,*/-]*", re.sub(_NAMES, "", part.lower())) is not None
        if not plain or not croniter.is_valid(" ".join(probe)):
            raise HpoConfigError(key, f"the {name} field {part!r} is not valid (standard cron: numbers, names, "
                                 "lists, ranges and steps)", expr)
    try:
        croniter(text, dt.datetime(2000, 1, 1)).get_next(dt.datetime)
    except CroniterBadDateError:
        raise HpoConfigError(key, "the day-of-month and month fields must match a real date", expr) from None
    return text


def _expanded(expr: str) -> list[list[Any]]:
    from croniter import croniter

    return [list(f) for f in croniter(expr).expanded[:5]]


def _restricted(part: str) -> bool:
    return part not in ("*", "?")


def next_runs(expr: str, count: int, tz: str | None = None, start: dt.datetime | None = None) -> list[dt.datetime]:
    """The next ``count`` times ``expr`` fires after ``start`` (default now), in ``tz`` (default
    the local time zone), as aware datetimes.

    Example:
        >>> start = dt.datetime(2026, 3, 27, 12, tzinfo=dt.timezone.utc)
        >>> [t.isoformat() for t in next_runs("0 2 * * *", 2, "Europe/Berlin", start)]
        ['2026-03-28T02:00:00+01:00', '2026-03-29T03:00:00+02:00']
    """
    from zoneinfo import ZoneInfo

    from croniter import croniter

    zone: dt.tzinfo | None = ZoneInfo(tz) if tz else dt.datetime.now().astimezone().tzinfo
    base = (start or dt.datetime.now(dt.timezone.utc)).astimezone(zone)
    it = croniter(check_cron(expr), base)
    return [it.get_next(dt.datetime) for _ in range(count)]


# ---- systemd ------------------------------------------------------------------------------------

def _ranges(values: Sequence[int], sep: str, show: Callable[[int], str] = str) -> str:
    """``[1, 2, 3, 5]`` as ``1..3,5`` (``sep`` between a range's ends; runs of three or more)."""
    out: list[str] = []
    vals = sorted(set(values))
    i = 0
    while i < len(vals):
        j = i
        while j + 1 < len(vals) and vals[j + 1] == vals[j] + 1:
            j += 1
        if j - i >= 2:
            out.append(f"{show(vals[i])}{sep}{show(vals[j])}")
        else:
            out += [show(v) for v in vals[i:j + 1]]
        i = j + 1
    return ",".join(out)


def on_calendar(expr: str, tz: str | None = None, key: str = "--cron") -> str:
    """The systemd ``OnCalendar=`` value that fires exactly when ``expr`` does (in ``tz`` when given).

    Raises:
        HpoConfigError: both day-of-month and day-of-week are restricted: cron then runs on a day
            that matches *either*, systemd only on one that matches both.

    Example:
        >>> on_calendar("0 2 1,15 jan-mar *")
        '*-01..03-01,15 02:00:00'
    """
    text = check_cron(expr, key)
    parts = text.split(" ")
    if _restricted(parts[2]) and _restricted(parts[4]):
        raise HpoConfigError(key, "the day-of-month and day-of-week fields cannot both be restricted for systemd: "
                             "cron runs on days matching either, OnCalendar= only on days matching both; "
                             "restrict one of them (or use two schedules)", expr)
    minute, hour, dom, month, dow = _expanded(text)

    def part(values: list[Any]) -> str:
        return "*" if values == ["*"] else _ranges(values, "..", "{:02d}".format)

    # cron numbers days from Sunday (0), systemd's ranges run Monday to Sunday
    days = "" if dow == ["*"] else _ranges([(d - 1) % 7 for d in dow], "..", lambda n: _DAYS[(n + 1) % 7]) + " "
    cal = f"{days}*-{part(month)}-{part(dom)} {part(hour)}:{part(minute)}:00"
    return f"{cal} {tz}" if tz else cal


def _systemd_quote(arg: str) -> str:
    """One ExecStart= or Environment= word: ``%`` and ``$`` escaped, quoted where needed."""
    arg = arg.replace("%", "%%").replace("$", "$$")
    if re.fullmatch(r"[A-Za-z0-9_@%+=:,./$-]+", arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


# ---- GitHub Actions -----------------------------------------------------------------------------

def _fixed_offset(zone: Any, year: int) -> dt.timedelta | None:
    """The zone's UTC offset if it is the same all this year and next, else None."""
    offsets = {dt.datetime(y, m, 15, 12, tzinfo=zone).utcoffset() for y in (year, year + 1) for m in range(1, 13)}
    return offsets.pop() if len(offsets) == 1 else None


def _compact(values: list[int]) -> str:
    return _ranges(values, "-")


def utc_cron(expr: str, tz: str, now: dt.datetime | None = None, key: str = "--cron") -> tuple[str, str | None]:
    """``expr`` read in ``tz`` as a UTC cron expression, and a warning when the conversion only
    holds part of the year (a zone with daylight-saving time: the offset of the next run is used).

    Raises:
        HpoConfigError: the shifted times cross midnight on some days but not others, or cross it
            while the day-of-month or month field is restricted (no UTC expression says that).

    Example:
        >>> utc_cron("30 1 * * mon", "Asia/Tokyo")
        ('30 16 * * 0', None)
    """
    from zoneinfo import ZoneInfo

    text = check_cron(expr, key)
    zone = ZoneInfo(check_timezone(tz, "--tz"))
    now = now or dt.datetime.now(dt.timezone.utc)
    fixed = _fixed_offset(zone, now.year)
    offset = fixed if fixed is not None else next_runs(text, 1, tz, now)[0].utcoffset()
    assert offset is not None
    parts = text.split(" ")
    if not offset or (parts[1:] == ["*"] * 4 and not offset % dt.timedelta(hours=1)):
        return text, None  # UTC already, or every hour of every day whatever the zone
    minute, hour, _, _, dow = _expanded(text)
    hours = list(range(24)) if hour == ["*"] else hour
    minutes = list(range(60)) if minute == ["*"] else minute
    shifted: dict[int, set[tuple[int, int]]] = {}
    for h in hours:
        for m in minutes:
            total = h * 60 + m - int(offset.total_seconds() // 60)
            shifted.setdefault(total // 1440, set()).add(divmod(total % 1440, 60))
    if len(shifted) != 1:
        raise HpoConfigError(key, f"cannot be shifted to UTC for GitHub Actions: in {tz} (UTC{_fmt_offset(offset)}) "
                             "its times fall on two UTC days; give the hour field in UTC without --tz", expr)
    carry, times = next(iter(shifted.items()))
    new_h = sorted({h for h, _ in times})
    new_m = sorted({m for _, m in times})
    if {(h, m) for h in new_h for m in new_m} != times:
        raise HpoConfigError(key, f"cannot be shifted to UTC for GitHub Actions: in {tz} (UTC{_fmt_offset(offset)}) "
                             "its minutes differ between hours; give the expression in UTC without --tz", expr)
    if carry:
        for i in (2, 3):
            if _restricted(parts[i]):
                raise HpoConfigError(key, f"cannot be shifted to UTC for GitHub Actions: in {tz} its times fall on "
                                     f"the day before or after in UTC, and the {FIELDS[i]} field is restricted; "
                                     "give the expression in UTC without --tz", expr)
        if dow != ["*"]:
            parts[4] = _compact([(d + carry) % 7 for d in dow])
    parts[0] = parts[0] if minute == ["*"] else _compact(new_m)
    parts[1] = parts[1] if hour == ["*"] and len(new_h) == 24 else _compact(new_h)
    utc = " ".join(parts)
    warning = None
    if fixed is None:
        warning = (f"GitHub Actions schedules run in UTC only: {expr!r} in {tz} is {utc!r} in UTC while {tz} is at "
                   f"UTC{_fmt_offset(offset)} (its next run); when {tz} changes to or from daylight-saving time the "
                   f"workflow runs an hour off its {tz} time until you change the expression")
    return utc, warning


def _fmt_offset(offset: dt.timedelta) -> str:
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


# ---- building the jobs ---------------------------------------------------------------------------

def hpo_command() -> list[str]:
    """The absolute command that runs ``hpo``: this process's ``hpo`` script, the one next to
    this Python, the one on PATH, or ``python -m hpo.cli``."""
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if argv0 is not None and argv0.name == "hpo" and argv0.exists():
        return [str(argv0.resolve())]
    sibling = Path(sys.executable).with_name("hpo")
    if sibling.exists():
        return [str(sibling.absolute())]
    found = shutil.which("hpo")
    if found:
        return [str(Path(found).absolute())]
    return [str(Path(sys.executable).absolute()), "-m", "hpo.cli"]


def _env(hpo: list[str]) -> dict[str, str]:
    """The environment a scheduled night needs: PATH (hpo's directory first), and the MLflow and
    Ray addresses when set here."""
    path = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
    bindir = str(Path(hpo[0]).parent)
    if bindir not in path.split(os.pathsep):
        path = f"{bindir}{os.pathsep}{path}"
    env = {"PATH": path}
    for var in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS"):
        if os.environ.get(var):
            env[var] = os.environ[var]
    return env


def _slug(name: str, limit: int = 30) -> str:
    """A DNS-1123 / unit-name safe form of the experiment name."""
    slug = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:limit].strip("-")
    return slug or "experiment"


_MARKER = "# >>> hpo schedule {key} >>>"
_END = "# <<< hpo schedule {key} <<<"


def _cron(exp: Experiment, path: Path, expr: str, tz: str | None) -> Schedule:
    hpo = hpo_command()
    env = _env(hpo)
    log = path.parent / f"{exp.name}.nightly.log"
    assigns = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    command = (f"cd {shlex.quote(str(path.parent))} && {assigns} "
               f"{' '.join(shlex.quote(a) for a in [*hpo, 'nightly', str(path)])} >> {shlex.quote(str(log))} 2>&1")
    lines = [
        _MARKER.format(key=path),
        f"# Nightly search {exp.name!r} ({path}), written by `hpo schedule`; `hpo schedule --install` replaces",
        "# this block and nothing else. No flock wrapper: `hpo nightly` itself holds an fcntl lock on",
        f"# <storage_path>/{exp.name}.nightly.lock and a second start exits 3 at once (a `flock -n` on that",
        "# same file would make the night find its own lock taken and exit 3 every time).",
    ]
    if tz:
        lines += ["# CRON_TZ applies to the lines below it (cronie; Debian's cron ignores it and uses the",
                  "# system time zone: use the systemd target there).", f"CRON_TZ={tz}"]
    lines += [f"{expr} {command.replace('%', chr(92) + '%')}", _END.format(key=path)]
    return Schedule("cron", expr, {"crontab": "\n".join(lines) + "\n"})


def merge_crontab(existing: str, block: str) -> str:
    """``existing`` with the hpo block of the same experiment replaced by ``block`` (or ``block``
    added): idempotent, other lines untouched. A block with ``CRON_TZ=`` goes last (the variable
    applies to the lines below it); one without goes before the first ``CRON_TZ=`` line.

    Example:
        >>> b = "# >>> hpo schedule /x.yaml >>>\\n0 2 * * * hpo nightly /x.yaml\\n# <<< hpo schedule /x.yaml <<<\\n"
        >>> once = merge_crontab("MAILTO=me\\n", b)
        >>> merge_crontab(once, b) == once == "MAILTO=me\\n" + b
        True
    """
    first = block.splitlines()[0]
    last = first.replace(">>>", "<<<")
    kept: list[str] = []
    inside = False
    for line in existing.splitlines():
        if line == first:
            inside = True
        elif inside and line == last:
            inside = False
        elif not inside:
            kept.append(line)
    new = block.rstrip("\n").splitlines()
    tz_at = next((i for i, line in enumerate(kept) if line.startswith("CRON_TZ=")), None)
    if any(line.startswith("CRON_TZ=") for line in new) or tz_at is None:
        while kept and not kept[-1].strip():
            kept.pop()
        merged = kept + new
    else:
        while tz_at > 0 and kept[tz_at - 1].startswith("#"):
            tz_at -= 1  # keep a CRON_TZ line's comment with it
        merged = kept[:tz_at] + new + kept[tz_at:]
    return "\n".join(merged) + "\n"


def _systemd(exp: Experiment, path: Path, expr: str, tz: str | None) -> Schedule:
    calendar = on_calendar(expr, tz)
    hpo = hpo_command()
    unit = f"hpo-nightly-{_slug(exp.name, 60)}"
    env = " ".join(_systemd_quote(f"{k}={v}") for k, v in _env(hpo).items())
    service = f"""\
# Written by `hpo schedule` for {path}
[Unit]
Description=hpo nightly search {exp.name}
Wants=network-online.target
After=network-online.target

[Service]
# oneshot: the timer never starts it again while a night still runs
Type=oneshot
WorkingDirectory={_systemd_quote(str(path.parent))}
Environment={env}
ExecStart={" ".join(_systemd_quote(a) for a in [*hpo, "nightly", str(path)])}
"""
    timer = f"""\
# Written by `hpo schedule`: cron {expr!r}{f" in {tz}" if tz else ""}
[Unit]
Description=Nightly hpo search {exp.name} (cron {expr})

[Timer]
OnCalendar={calendar}
# a night missed while the machine was off runs once at the next boot
Persistent=true
Unit={unit}.service

[Install]
WantedBy=timers.target
"""
    return Schedule("systemd", expr, {f"{unit}.service": service, f"{unit}.timer": timer})


def systemd_dir() -> Path:
    """Where ``--install`` writes units: the system's for root, else the user's."""
    if os.geteuid() == 0:
        return Path("/etc/systemd/system")
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "systemd" / "user"


# The CronJob's pod: create tonight's RayJob (idempotent: a RayJob of that name is tonight's), then wait
# for it, so that concurrencyPolicy: Forbid also keeps two nights' RayJobs apart. Python's standard
# library and the pod's service account token only: no kubectl needed in the image.
_SUBMIT = r'''import datetime, json, os, ssl, sys, time, urllib.error, urllib.request
from zoneinfo import ZoneInfo
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
ns = open(f"{sa}/namespace").read().strip()
night = datetime.datetime.now(ZoneInfo(os.environ["HPO_TZ"])).date().isoformat()
job = json.loads(os.environ["HPO_RAYJOB"])
name = job["metadata"].pop("generateName") + night
job["metadata"]["name"] = name
job["spec"]["entrypoint"] = job["spec"]["entrypoint"].replace(os.environ["HPO_DATE_EXPR"], night)
url = f"https://kubernetes.default.svc/apis/ray.io/v1/namespaces/{ns}/rayjobs"
ctx = ssl.create_default_context(cafile=f"{sa}/ca.crt")
def call(method, url, body=None):
    req = urllib.request.Request(url, method=method, data=body and json.dumps(body).encode(), headers={
        "Authorization": "Bearer " + open(f"{sa}/token").read().strip(), "Content-Type": "application/json"})
    with urllib.request.urlopen(req, context=ctx) as r:
        return json.load(r)
try:
    call("POST", url, job)
    print(f"created RayJob {name}", flush=True)
except urllib.error.HTTPError as e:
    if e.code != 409:
        raise
    print(f"RayJob {name} exists already (this night ran or runs): waiting for it", flush=True)
while True:
    try:
        status = call("GET", f"{url}/{name}").get("status", {})
    except (urllib.error.URLError, OSError) as e:  # the API server restarting: ask again
        print(f"asking for RayJob {name}: {e}", flush=True)
        status = {}
    if status.get("jobStatus") in ("SUCCEEDED", "FAILED", "STOPPED") or status.get("jobDeploymentStatus") == "Failed":
        print(f"RayJob {name}: {status.get('jobStatus')} ({status.get('jobDeploymentStatus')})", flush=True)
        sys.exit(0 if status.get("jobStatus") == "SUCCEEDED" else 1)
    time.sleep(30)
'''


def _date_expr(tz: str | None) -> str:
    return f'"$(TZ={tz} date +%F)"' if tz else '"$(date +%F)"'


def _yaml(header: str, *docs: Any) -> str:
    import yaml

    body = "---\n".join(yaml.safe_dump(d, sort_keys=False, width=120) for d in docs)
    return "".join(f"# {line}\n".replace("# \n", "#\n") for line in header.splitlines()) + body


def _kubernetes(exp: Experiment, path: Path, expr: str, tz: str | None, image: str) -> Schedule:
    slug = _slug(exp.name)
    base = f"hpo-nightly-{slug}"
    labels = {"app.kubernetes.io/name": "hpo", "app.kubernetes.io/component": "nightly", "hpo/experiment": slug}
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")  # a server's; a local path means nothing in the cluster
    env = [{"name": "MLFLOW_TRACKING_URI", "value": uri}] if uri.startswith(("http://", "https://")) else []
    container = {"name": "ray-head", "image": image, "workingDir": K8S_WORKDIR,
                 "resources": {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}},
                 **({"env": env} if env else {})}
    worker = {**container, "name": "ray-worker"}
    date_expr = _date_expr(tz)
    rayjob = {
        "apiVersion": "ray.io/v1", "kind": "RayJob",
        "metadata": {"generateName": f"{base}-", "labels": labels},
        "spec": {
            "entrypoint": f"hpo nightly {shlex.quote(path.name)} --date {date_expr}",
            "submissionMode": "K8sJobMode",
            "backoffLimit": 0,
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": 86400,
            "rayClusterSpec": {
                "rayVersion": "2.60.0",
                "headGroupSpec": {"rayStartParams": {}, "template": {"spec": {"containers": [container]}}},
                "workerGroupSpecs": [{"groupName": "workers", "replicas": 1, "minReplicas": 1, "maxReplicas": 1,
                                      "rayStartParams": {}, "template": {"spec": {"containers": [worker]}}}],
            },
        },
    }
    cronjob = {
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": base, "labels": labels},
        "spec": {
            "schedule": expr,
            **({"timeZone": tz} if tz else {}),
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 3600,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {"spec": {"backoffLimit": 0, "template": {"metadata": {"labels": labels}, "spec": {
                "serviceAccountName": base,
                "restartPolicy": "Never",
                "containers": [{
                    "name": "submit-rayjob", "image": image, "command": ["python", "-c", _SUBMIT],
                    "env": [{"name": "HPO_TZ", "value": tz or "UTC"}, {"name": "HPO_DATE_EXPR", "value": date_expr},
                            {"name": "HPO_RAYJOB", "value": json.dumps(rayjob, separators=(",", ":"))}],
                }],
            }}}},
        },
    }
    rbac = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": base, "labels": labels}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": base, "labels": labels},
         "rules": [{"apiGroups": ["ray.io"], "resources": ["rayjobs"], "verbs": ["create", "get", "list", "watch"]},
                   {"apiGroups": ["ray.io"], "resources": ["rayjobs/status"], "verbs": ["get"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": base, "labels": labels},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": base},
         "subjects": [{"kind": "ServiceAccount", "name": base}]},
    ]
    note = (f"Image {image}: replace it with one that has hpo, your code and the experiment in {K8S_WORKDIR}.\n"
            "Nights warm-start from one Optuna study: set nightly.storage to a PostgreSQL URL and\n"
            "MLFLOW_TRACKING_URI to a server (each RayJob is a fresh Ray cluster).")
    return Schedule("kubernetes", expr, {
        f"{base}-cronjob.yaml": _yaml(
            f"Written by `hpo schedule` for {path}: cron {expr!r}{f' in {tz}' if tz else ''}.\n"
            "The pod creates tonight's RayJob (named by the date: the same night twice is one RayJob) and waits\n"
            "for it, so concurrencyPolicy: Forbid also keeps two nights apart. Not KubeRay's RayCronJob: it is\n"
            "alpha, behind a feature gate that is off by default, has no concurrency policy, and backfills\n"
            "missed ticks after an operator outage.\n" + note, cronjob),
        f"{base}-rbac.yaml": _yaml("Lets the CronJob's pod create and watch RayJobs in its namespace.", *rbac),
        f"{base}-rayjob.yaml": _yaml(
            "Tonight's RayJob, as the CronJob creates it (for a manual night: kubectl create -f this file).\n"
            + note, rayjob),
    })


def _repo_root(path: Path) -> Path | None:
    for parent in [path.parent, *path.parents]:
        if (parent / ".git").exists():
            return parent
    return None


def _github_actions(exp: Experiment, path: Path, expr: str, tz: str | None) -> Schedule:
    notes: list[str] = []
    utc = expr
    if tz:
        utc, warning = utc_cron(expr, tz)
        notes.append(warning or f"GitHub Actions schedules run in UTC only: {expr!r} in {tz} is {utc!r} in UTC "
                                f"(a fixed offset all year, so this is exact)")
    root = _repo_root(path)
    if root is None:
        notes.append(f"{path} is in no git repository: the workflow names it relative to the working directory")
    rel = path.relative_to(root) if root else Path(os.path.relpath(path))
    date_expr = _date_expr(tz)
    env = {"MLFLOW_TRACKING_URI": "${{ secrets.MLFLOW_TRACKING_URI }}"}
    workflow = {
        "name": f"hpo nightly {exp.name}",
        "on": {"schedule": [{"cron": utc}], "workflow_dispatch": {}},
        "concurrency": {"group": f"hpo-nightly-{_slug(exp.name)}", "cancel-in-progress": False},
        "jobs": {"nightly": {
            "runs-on": "ubuntu-latest",
            "timeout-minutes": 360,
            "steps": [
                {"uses": "actions/checkout@v4"},
                {"uses": "actions/setup-python@v5", "with": {"python-version": "3.11"}},
                {"name": "Install torch (CPU)",
                 "run": "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"},
                {"name": "Install the project", "run": "pip install ."},
                {"name": "Tonight's search", "working-directory": str(rel.parent) if str(rel.parent) != "." else ".",
                 "env": env, "run": f"hpo nightly {shlex.quote(rel.name)} --date {date_expr} --json"},
            ],
        }},
    }
    header = (f"Written by `hpo schedule` for {rel}: cron {expr!r}{f' in {tz}' if tz else ''}.\n"
              f"GitHub Actions schedules run in UTC only: `{utc}` is that time in UTC; runs can start late.\n"
              "The runner keeps nothing between nights: set nightly.storage to a PostgreSQL URL and the\n"
              "MLFLOW_TRACKING_URI secret to an MLflow server so that nights warm-start and are recorded.")
    text = _yaml(header, workflow)  # `'on':` stays quoted: YAML 1.1 readers take a bare `on` for true
    name = f"hpo-nightly-{_slug(exp.name)}.yml"
    return Schedule("github-actions", utc, {name: text}, notes)


def build_schedule(exp: Experiment, path: str | os.PathLike[str], cron: str, target: str, tz: str | None = None,
                   image: str = DEFAULT_IMAGE) -> Schedule:
    """The ``target`` job that runs ``hpo nightly <path>`` on ``cron`` (in ``tz`` when given).

    Raises:
        HpoConfigError: a bad cron expression (naming its field), time zone or target, or one a
            target cannot express exactly.
    """
    if target not in TARGETS:
        raise HpoConfigError("--target", f"must be one of {', '.join(TARGETS)}", target)
    if tz is not None:
        check_timezone(tz, "--tz")
    expr = check_cron(cron)
    p = Path(path).resolve()
    if target == "cron":
        sched = _cron(exp, p, expr, tz)
    elif target == "systemd":
        sched = _systemd(exp, p, expr, tz)
    elif target == "kubernetes":
        sched = _kubernetes(exp, p, expr, tz, image)
    else:
        sched = _github_actions(exp, p, expr, tz)
    if tz and tz != exp.nightly.timezone and target in ("cron", "systemd"):
        sched.notes.append(f"--tz {tz} differs from nightly.timezone {exp.nightly.timezone}: the night's date "
                           f"(hpo nightly's default --date) is today in {exp.nightly.timezone}")
    return sched


def install(sched: Schedule, out: str | os.PathLike[str] | None = None) -> list[str]:
    """Install ``sched`` where it can be, and say what was done and what is left to do:
    cron merges its block into the user's crontab (``crontab -``); systemd writes its units into
    the user's (or, for root, the system's) unit directory; Kubernetes and GitHub Actions files
    are written to ``out``."""
    if sched.target == "cron":
        if shutil.which("crontab") is None:
            raise HpoConfigError("--install", "needs the `crontab` command (Debian package `cron`)", Path("crontab"))
        current = subprocess.run(["crontab", "-l"], capture_output=True, text=True)
        merged = merge_crontab(current.stdout if current.returncode == 0 else "", sched.files["crontab"])
        subprocess.run(["crontab", "-"], input=merged, text=True, check=True)
        return ["installed the crontab entry (`crontab -l` shows it; running again replaces it)"]
    dest = Path(out) if out else (systemd_dir() if sched.target == "systemd" else Path("."))
    dest.mkdir(parents=True, exist_ok=True)
    lines = []
    for name, text in sched.files.items():
        (dest / name).write_text(text)
        lines.append(f"wrote {dest / name}")
    if sched.target == "systemd":
        timer = next(n for n in sched.files if n.endswith(".timer"))
        flag = "" if os.geteuid() == 0 else "--user "
        if out:
            lines.append(f"copy them to {systemd_dir()}, then:")
        lines.append(f"enable it with: systemctl {flag}daemon-reload && systemctl {flag}enable --now {timer}")
        if flag:
            lines.append("(user timers run while you are logged in, unless: loginctl enable-linger $USER)")
    elif sched.target == "kubernetes":
        lines.append(f"apply them with: kubectl apply -f {dest / next(n for n in sched.files if 'rbac' in n)} "
                     f"-f {dest / next(n for n in sched.files if 'cronjob' in n)}")
    else:
        lines.append("commit it under .github/workflows/ of the repository")
    return lines
