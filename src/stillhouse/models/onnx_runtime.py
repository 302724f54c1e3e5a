"""Text students on ONNX Runtime: export from torch, dynamic int8 quantization, and a classifier that answers like
the torch one (same tokenizer, padding, pooling, head and pruned-vocabulary id map, all inside the graph).

The export is PyTorch's maintained exporter (``torch.onnx.export(dynamo=True)``, opset 18) with a dynamic batch
and sequence length; quantization is ONNX Runtime's ``quantize_dynamic`` (int8 weights of the MatMul/Gemm ops,
activations quantized per call). Every conversion's accuracy change is measured on the evaluation set by the
evaluation step, never assumed.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from pathlib import Path

import numpy as np

from stillhouse.errors import ModelError
from stillhouse.models.classifier import VOCAB_MAP_FILE, in_length_order, read_classifier_info, tokenize
from stillhouse.models.hf import quiet_transformers
from stillhouse.models.prune import unknown_tokens

ONNX_FILE = "model.onnx"  # in a packaged student's folder: the runtime it was measured with
# the files of each conversion in an evaluation's runtime/ folder, in the order they are made (int8 from the export)
RUNTIME_FILES = {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx"}
RUNTIME_DIR = "runtime"  # in the evaluation folder: the student's converted files (models.student.runtime)


def require_onnx() -> None:
    """A clear error where the ``onnx`` extra (onnx, onnxscript, onnxruntime) is not installed."""
    missing = [name for name in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise ModelError(f"package.runtime `onnx` needs {', '.join(missing)}, which is not installed here",
                         "pip install 'stillhouse[onnx]' (the serving image has it), or set package.runtime "
                         "`torch`")


def deployed_runtime(runtime: str, quantize: str) -> str:
    """``package.runtime`` and ``package.quantize`` → the runtime's name: torch, onnx or onnx-int8."""
    return runtime if quantize == "none" else f"{runtime}-{quantize}"


def export_classifier(model, tokenizer, max_length: int, path: str | Path) -> Path:
    """Write ``model`` (a :class:`~stillhouse.models.classifier.TextClassifier`) as one ONNX file:
    inputs ``input_ids`` and ``attention_mask`` ``[batch, sequence]`` (int64, tokenizer ids), output ``logits``
    ``[batch, labels]`` (before any serving temperature)."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.to("cpu").eval()
    sample = tokenize(tokenizer, ["an example text to trace", "another"], max_length)
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence", max=max(max_length, 2))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*axis name.*", category=UserWarning)  # dynamic-shape renames
        torch.onnx.export(model, (sample["input_ids"], sample["attention_mask"]), str(path), dynamo=True,
                          input_names=["input_ids", "attention_mask"], output_names=["logits"],
                          dynamic_shapes=({0: batch, 1: sequence}, {0: batch, 1: sequence}), opset_version=18,
                          external_data=False, verbose=False)
    return path


def quantize_int8(source: str | Path, target: str | Path) -> Path:
    """Dynamic int8 quantization of an exported classifier: the weights of every MatMul and Gemm whose weight is
    a constant (the encoder's projections and the head) become int8, their activations are quantized per call.

    Left in float: the embedding lookups (memory, not compute) and the activation × activation products of
    attention. Measured on all-MiniLM-L6-v2 and all-mpnet-base-v2 classifiers (Banking77): ONNX Runtime's
    default, which quantizes those too, dropped both to chance (accuracy 0.013), while each node quantized alone
    was harmless: per-tensor activation ranges compound over the layers. Quantizing only the weight products
    kept the 6-layer student at 0.865 against 0.865 in float (600 test rows).

    The exporter records the shape of every value, initializers included; the quantizer rewrites weights
    (transposed, int8) and its shape inference then rejects the recorded shapes, so they are dropped first
    (ONNX Runtime infers them again when it loads the model)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(source))
    del model.graph.value_info[:]
    constants = {tensor.name for tensor in model.graph.initializer}
    weight_products = [node.name for node in model.graph.node
                       if node.op_type in ("MatMul", "Gemm") and any(name in constants for name in node.input)]
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer's advice to pre-process, on the root logger, at every call
    try:
        quantize_dynamic(model, str(target), weight_type=QuantType.QInt8, nodes_to_quantize=weight_products)
    finally:
        root.setLevel(level)
    return Path(target)


def convert_classifier(model, tokenizer, max_length: int, folder: str | Path, runtime: str) -> dict:
    """Every conversion on the way from the torch ``model`` to ``runtime`` (onnx, or onnx then onnx-int8),
    written to ``folder`` under :data:`RUNTIME_FILES`: ``{runtime name: OnnxClassifier}`` in that order."""
    require_onnx()
    folder = Path(folder)
    steps = list(RUNTIME_FILES)[:list(RUNTIME_FILES).index(runtime) + 1]
    id_map = model.id_map.cpu().numpy() if model.id_map is not None else None
    out = {}
    for name in steps:
        path = folder / RUNTIME_FILES[name]
        if name == "onnx":
            export_classifier(model, tokenizer, max_length, path)
        else:
            quantize_int8(folder / RUNTIME_FILES["onnx"], path)
        out[name] = OnnxClassifier(path, tokenizer, max_length, model.head.out_features, id_map=id_map,
                                   unk_id=model.unk_id)
    return out


class OnnxClassifier:
    """An exported classifier on ONNX Runtime's CPU provider: ``logits(texts)`` like
    :func:`~stillhouse.models.classifier.encode_texts`, end to end from text."""

    def __init__(self, path: str | Path, tokenizer, max_length: int, num_labels: int, threads: int | None = None,
                 id_map: np.ndarray | None = None, unk_id: int | None = None):
        require_onnx()
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        # Idle worker threads sleep instead of spinning: a served student shares its host or pod with other
        # processes (and, in an evaluation, with the models timed beside it), which spinning threads starve.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.tokenizer, self.max_length, self.num_labels = tokenizer, max_length, num_labels
        self.id_map, self.unk_id = id_map, unk_id
        self.unknown_tokens = 0  # as TextClassifier.unknown_tokens: pruned-away tokens read as [UNK]

    def run(self, texts: list[str]) -> np.ndarray:
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="np")
        ids = enc["input_ids"].astype(np.int64)
        self.unknown_tokens += unknown_tokens(self.id_map, ids, self.unk_id)
        return self.session.run(["logits"], {"input_ids": ids,
                                             "attention_mask": enc["attention_mask"].astype(np.int64)})[0]

    def logits(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Logits ``[n, labels]`` in input order; batches of similar length, as for the torch model."""
        return in_length_order(texts, batch_size, self.run, self.num_labels)


def load_onnx_classifier(folder: str | Path, path: str | Path | None = None,
                         threads: int | None = None) -> OnnxClassifier:
    """The ONNX classifier of a classifier folder (``model.onnx`` there, or ``path``), with the folder's
    tokenizer, max length and pruned-vocabulary map."""
    from safetensors.numpy import load_file
    from transformers import AutoTokenizer

    quiet_transformers()
    folder = Path(folder)
    info = read_classifier_info(folder)
    id_map = unk = None
    if (folder / VOCAB_MAP_FILE).is_file():
        saved = load_file(str(folder / VOCAB_MAP_FILE))
        id_map, unk = saved["id_map"], int(saved["unk_id"][0])
    return OnnxClassifier(path or folder / ONNX_FILE, AutoTokenizer.from_pretrained(folder / "tokenizer"),
                          info.max_length, len(info.labels), threads, id_map, unk)


def conversion_figures(y: np.ndarray, reference: np.ndarray, converted: np.ndarray) -> dict:
    """What a conversion (torch → ONNX, ONNX → int8) changed on the evaluation rows: the converted model's
    accuracy and its change against the reference (points of accuracy, negative = lost), how often the two
    agree on the label, and the largest logit difference."""
    y = np.asarray(y)
    before, after = float(np.mean(reference.argmax(1) == y)), float(np.mean(converted.argmax(1) == y))
    return {"accuracy": after, "accuracy_change": after - before,
            "agreement": float(np.mean(reference.argmax(1) == converted.argmax(1))),
            "max_abs_logit_difference": float(np.max(np.abs(reference - converted))) if len(y) else 0.0}


def conversion_refusal(runtime: dict) -> tuple[str, str]:
    """Why a converted student is not packaged (its loss beyond ``package.max_accuracy_loss``), and the fix."""
    return (f"the {runtime['deployed']} student loses {-runtime['accuracy_change'] * 100:.2f} accuracy points "
            f"against the torch student on the held-out rows, more than package.max_accuracy_loss "
            f"({runtime['max_accuracy_loss'] * 100:.2f})",
            "serve it with package.quantize none (or package.runtime torch), or raise package.max_accuracy_loss "
            "if that loss is acceptable")
