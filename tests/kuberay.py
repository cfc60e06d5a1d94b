"""KubeRay CRD schemas for the tests: not committed (fetched files stay out of this repository),
looked up where cluster/kuberay/README.md says; a test skips, saying so, where one is missing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FILES = {"RayJob": "rayjob-v1.schema.json", "RayCluster": "raycluster-v1.schema.json"}
ENV = {"RayJob": "HPO_RAYJOB_SCHEMA", "RayCluster": "HPO_RAYCLUSTER_SCHEMA"}


def crd_schema(kind: str) -> dict:
    """The v1 ``openAPIV3Schema`` of KubeRay's ``kind`` CRD: from ``$HPO_RAYJOB_SCHEMA`` /
    ``$HPO_RAYCLUSTER_SCHEMA``, ``cluster/kuberay/schema/`` or ``../shared/kuberay/``; else skip."""
    for candidate in (os.environ.get(ENV[kind]), ROOT / "cluster/kuberay/schema" / FILES[kind],
                      ROOT.parent / "shared/kuberay" / FILES[kind]):
        if candidate and Path(candidate).is_file():
            return json.loads(Path(candidate).read_text())
    pytest.skip(f"no {kind} CRD schema (cluster/kuberay/README.md says where it is looked for)")
