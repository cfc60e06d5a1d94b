"""hpo's shims over Ray internals (hpo/_compat/ray.py) that need no Ray cluster."""

from __future__ import annotations

import json
import subprocess
import sys

_TELEMETRY = """
import json, sys
import ray._common.usage.usage_lib as lib
from ray.air._internal import usage
from ray.tune import Callback
from ray.tune.logger import JsonLoggerCallback, LoggerCallback
from hpo._compat.ray import lean_callback_telemetry

class Mine(Callback): pass
class MyLogger(LoggerCallback): pass

recorded = []
lib.record_extra_usage_tag = lambda key, value, *a, **k: recorded.append((lib.TagKey.Name(key), value))
callbacks = [Mine(), MyLogger(), JsonLoggerCallback(), Mine()]
original = usage.tag_callbacks
with lean_callback_telemetry():
    usage.tag_callbacks(callbacks)
imported = sorted(m for m in ("mlflow", "wandb", "ray.air.integrations.mlflow", "ray.air.integrations.comet")
                  if m in sys.modules)
restored = usage.tag_callbacks is original
print(json.dumps({"recorded": recorded, "imported": imported, "restored": restored,
                  "ray": dict(usage._count_callbacks(callbacks))}))
"""


def test_callback_telemetry_records_rays_tag_without_importing_the_integrations() -> None:
    out = subprocess.run([sys.executable, "-c", _TELEMETRY], capture_output=True, text=True, check=True, timeout=120)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["imported"] == []  # Ray's own tag_callbacks imports MLflow, W&B, Comet and Aim's integrations
    assert res["restored"]
    [(key, value)] = res["recorded"]
    assert key == "AIR_CALLBACKS" and json.loads(value) == res["ray"]  # the same tag Ray records
    assert res["ray"] == {"CustomCallback": 2, "CustomLoggerCallback": 1, "JsonLoggerCallback": 1}
