"""A hospital's modified client, for tests/deployment/test_hostile_hospitals.py only.

A hospital controls its own machine: this folder on a site node's PYTHONPATH, with
``MEDFED_TEST_HOSTILE`` = JSON ``{"JOB": {"ROUND": "KIND"}}`` (KIND one of
common.simulation_environment.HOSTILE_KINDS), makes every Python process of that node import
this file at start-up; in the ClientApp process, once ``client.site_client`` is imported, its
``SiteClient.fit`` is wrapped to poison the reply of those jobs' rounds with the same
``_poisoned`` the simulated hostile sites use, after the site's own checks and clipping.
With ``MEDFED_TEST_HOSTILE_NAME`` set, a poisoned reply also gives that name as the site's
(another hospital's, to get it blamed). SecAgg+'s mod still masks what it returns, as a
modified client that keeps the protocol would.
"""

import importlib.abc
import importlib.machinery
import json
import os
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

HOSTILE_ENV = "MEDFED_TEST_HOSTILE"
CLAIMED_NAME_ENV = "MEDFED_TEST_HOSTILE_NAME"


def _make_hostile(module: ModuleType, plan: dict[str, dict[str, str]]) -> None:
    from common import message_keys as keys  # noqa: PLC0415 (only once the client is loaded)

    honest_fit = module.SiteClient.fit

    def fit(self: Any, parameters: list, config: dict) -> tuple[list, int, dict]:
        delta, count, metrics = honest_fit(self, parameters, config)
        kind = plan.get(self.job.name, {}).get(str(config[keys.SERVER_ROUND]))
        if kind is None:
            return delta, count, metrics
        limit = self.job.secure_aggregation.max_update_norm
        sent, count = module._poisoned(kind, delta, count, limit)
        claimed = os.environ.get(CLAIMED_NAME_ENV)
        return sent, count, metrics if claimed is None else {**metrics, keys.SITE_NAME: claimed}

    module.SiteClient.fit = fit


class _HostileFinder(importlib.abc.MetaPathFinder):
    """Finds client.site_client as Python would, and wraps its fit once it has run."""

    def __init__(self, plan: dict[str, dict[str, str]]) -> None:
        self.plan = plan

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "client.site_client":
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        loader, plan = spec.loader, self.plan
        run_module = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            run_module(module)
            _make_hostile(module, plan)

        loader.exec_module = exec_module  # type: ignore[method-assign]  # this spec's loader only
        return spec


if os.environ.get(HOSTILE_ENV):
    sys.meta_path.insert(0, _HostileFinder(json.loads(os.environ[HOSTILE_ENV])))
