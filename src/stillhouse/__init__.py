"""Stillhouse: knowledge distillation as Kubeflow pipelines of Ray Train jobs, served with BentoML.

The library decides everything; ``components/``, ``pipelines/`` and the CLI only adapt it.
"""

__version__ = "0.1.0"
