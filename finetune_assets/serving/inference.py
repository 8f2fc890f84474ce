"""SageMaker inference handler for a sentence-transformers model: dense vectors or sparse token weights.

Packed as ``code/inference.py`` into ``model.tar.gz`` (see ``finetune_assets.clients.sagemaker_endpoint``), where
the SageMaker Hugging Face / PyTorch inference toolkits call ``model_fn``, ``input_fn``, ``predict_fn`` and
``output_fn``. The shapes are what OpenSearch ml-commons' default connector functions send and read:

- request: a JSON list of strings (``connector.pre_process.default.embedding`` + ``"${parameters.input}"``);
  ``{"texts": [...]}`` and ``{"inputs": [...]}`` are accepted too;
- dense model: a list of float lists (read by ``connector.post_process.default.embedding``);
- sparse model (SPLADE ``SparseEncoder``): a list of ``{token: weight}`` objects, zero weights and special tokens
  left out (as in the exported TorchScript package), which the ``sparse_encoding`` processor reads as is.

Only the standard library at import time (sentence-transformers is imported in ``model_fn``), so the Dagster side
can import ``model_kind`` cheaply and the container needs nothing beyond ``requirements.txt``. Bad requests raise
``BadRequest``, which both SageMaker inference toolkits answer with HTTP 400 and its text.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

JSON = "application/json"
DENSE, SPARSE = "dense", "sparse"
MAX_TEXTS = int(os.environ.get("FINETUNE_MAX_TEXTS", "1024"))
BATCH_SIZE = int(os.environ.get("FINETUNE_BATCH_SIZE", "32"))
# Module types that only a SparseEncoder saves (sentence-transformers 5.x and 6.x module paths).
_SPARSE_MODULE_MARKERS = ("sparse_encoder", "SpladePooling", "MLMTransformer", "SparseStaticEmbedding")


try:  # inside the PyTorch inference container: its toolkit answers these errors with their own status code
    from sagemaker_inference.errors import BaseInferenceToolkitError as _ToolkitError
except ImportError:  # elsewhere (tests, the Hugging Face toolkit, which answers every handler error with 400)
    _ToolkitError = Exception


class BadRequest(ValueError, _ToolkitError):
    """The request cannot be answered as sent; the message says which part is wrong. Answered with HTTP 400."""

    def __init__(self, message: str):
        ValueError.__init__(self, message)
        self.status_code, self.message, self.phrase = 400, message, "Bad Request"


def model_kind(model_dir: str | Path) -> str:
    """``sparse`` for a SparseEncoder folder, ``dense`` for a SentenceTransformer one.

    Read from ``config_sentence_transformers.json`` (``model_type``) or ``modules.json``; a bare Hugging Face
    folder (no modules.json) is sparse when its architecture is a masked-LM head, as SPLADE models are.
    """
    folder = Path(model_dir)
    st_config = _read_json(folder / "config_sentence_transformers.json")
    if isinstance(st_config, dict) and st_config.get("model_type") == "SparseEncoder":
        return SPARSE
    modules = _read_json(folder / "modules.json")
    if isinstance(modules, list):
        types = " ".join(str(module.get("type", "")) for module in modules if isinstance(module, dict))
        return SPARSE if any(marker in types for marker in _SPARSE_MODULE_MARKERS) else DENSE
    hf_config = _read_json(folder / "config.json")
    if isinstance(hf_config, dict):
        architectures = hf_config.get("architectures") or []
        return SPARSE if any(str(a).endswith("ForMaskedLM") for a in architectures) else DENSE
    raise FileNotFoundError(f"no model in {folder}: expected modules.json or config.json")


def _read_json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc


def model_fn(model_dir: str):
    """Load the model once per worker, on the GPU when the instance has one."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if model_kind(model_dir) == SPARSE:
        from sentence_transformers import SparseEncoder

        return SparseEncoder(model_dir, device=device)
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(model_dir, device=device)


def input_fn(input_data: str | bytes, content_type: str | None) -> list[str]:
    media_type = (content_type or JSON).split(";")[0].strip().lower()
    if media_type != JSON:
        raise BadRequest(f"content type {content_type!r} is not supported: send {JSON} (a JSON list of strings)")
    if isinstance(input_data, (bytes, bytearray)):
        try:
            input_data = input_data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRequest(f"request body is not UTF-8: {exc}") from exc
    try:
        payload = json.loads(input_data)
    except ValueError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from exc
    return parse_texts(payload)


def parse_texts(payload: Any) -> list[str]:
    """The texts of a request: a JSON list of strings, or one under "texts" / "inputs"."""
    if isinstance(payload, dict):
        key = next((k for k in ("texts", "inputs") if k in payload), None)
        if key is None:
            raise BadRequest(f"request object has keys {sorted(payload)[:10]}; expected a JSON list of strings, "
                             "or an object with a 'texts' or 'inputs' list")
        payload, where = payload[key], f"'{key}'"
    else:
        where = "request body"
    if not isinstance(payload, list):
        raise BadRequest(f"{where} must be a JSON list of strings, not {_json_type(payload)}")
    if not payload:
        raise BadRequest(f"{where} is an empty list: send at least one text")
    if len(payload) > MAX_TEXTS:
        raise BadRequest(f"{where} has {len(payload)} texts; at most {MAX_TEXTS} per request")
    for number, item in enumerate(payload):
        if not isinstance(item, str):
            raise BadRequest(f"{where} item {number} is {_json_type(item)}, not a string")
    return payload


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)


def predict_fn(texts: list[str], model) -> list:
    from sentence_transformers import SparseEncoder

    if isinstance(model, SparseEncoder):
        return sparse_weights(model, texts)
    vectors = model.encode(texts, batch_size=BATCH_SIZE, convert_to_numpy=True, show_progress_bar=False)
    return vectors.astype("float32").tolist()


def sparse_weights(model, texts: list[str]) -> list[dict[str, float]]:
    # The document side: what ingestion needs, and the only side an inference-free (Router) model runs here.
    embeddings = model.encode_document(texts, batch_size=BATCH_SIZE, convert_to_tensor=True, show_progress_bar=False)
    special = set(model.tokenizer.all_special_tokens)
    return [{token: float(weight) for token, weight in row if weight > 0 and token not in special}
            for row in model.decode(embeddings, top_k=None)]


def output_fn(prediction: list, accept: str | None) -> str:
    media_type = (accept or JSON).split(";")[0].strip().lower()
    if media_type not in (JSON, "*/*"):
        raise BadRequest(f"accept type {accept!r} is not supported: the answer is {JSON}")
    return json.dumps(prediction)
