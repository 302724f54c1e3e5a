"""Where training jobs run: one interface, chosen by ``runtime.launcher``.

A pipeline step builds a :class:`~stillhouse.distill.training.TrainJob` and hands it to a launcher; the
launcher returns a local folder holding the final checkpoint. Steps never call Ray directly, so the same step
trains in its own process (``local``: Ray started inside it) or submits the same job to a cluster
(``kuberay``: :class:`~stillhouse.cluster.kuberay.KubeRayLauncher` creates a RayJob whose entrypoint,
:mod:`stillhouse.cluster.job`, calls :func:`~stillhouse.cluster.local_ray.run_trainer` there). A new runtime is one more entry in
:data:`LAUNCHERS`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from stillhouse.cluster.kuberay import KubeRayLauncher
from stillhouse.cluster.local_ray import LocalRayLauncher
from stillhouse.distill.training import TrainJob
from stillhouse.spec.runtime import RuntimeSpec


class Launcher(Protocol):
    """Runs a training job to completion and returns the last checkpoint's folder."""

    def fit(self, job: TrainJob) -> Path: ...


def _kuberay(runtime: RuntimeSpec) -> Launcher:
    return KubeRayLauncher(runtime)


LAUNCHERS = {"local": LocalRayLauncher, "kuberay": _kuberay}


def launcher_for(runtime: RuntimeSpec) -> Launcher:
    """The launcher ``runtime.launcher`` names."""
    return LAUNCHERS[runtime.launcher](runtime)
