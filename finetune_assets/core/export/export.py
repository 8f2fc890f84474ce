"""Package a trained sentence-transformers model for OpenSearch ml-commons as a *local* model.

What ml-commons needs for a local model (register through `POST /_plugins/_ml/models/meta` plus
`POST /_plugins/_ml/models/<model_id>/chunk/<n>`, or `_register` with a `url` pointing at the zip):

* a zip with exactly one model file (`*.pt` TorchScript or `*.onnx`) and `tokenizer.json`, both at the
  zip root: ml-commons unzips it and looks for the model file among the top-level files only;
* a register body with `name`, `version`, `model_format`, `function_name`, `model_content_hash_value`
  (SHA-256 of the zip), `model_content_size_in_bytes`, `total_chunks` and, for text embedding,
  `model_config` (`model_type`, `embedding_dimension`, `framework_type`, `pooling_mode`,
  `normalize_result`, `all_config`).

How ml-commons runs the files (read from ml-commons' SentenceTransformerTextEmbeddingTranslator,
ONNXSentenceTransformerTextEmbeddingTranslator, SparseEncodingTranslator, TextEmbeddingModelConfig and
MLRegisterModelMetaInput, and opensearch-py-ml's SentenceTransformerModel.save_as_pt / NeuralSparseModel,
which trace with a `{"input_ids", "attention_mask"}` dict and `strict=False`):

* TORCH_SCRIPT text embedding (`framework_type: sentence_transformers`): DJL feeds ONE sentence,
  tokenized with `tokenizer.json`, as a dict `{"input_ids": [1, L], "attention_mask": [1, L]}`
  (tensor names `input1.input_ids`, `input1.attention_mask`) and reads the output dict's
  `sentence_embedding`. Pooling and normalisation must happen inside the traced model.
* ONNX text embedding: ml-commons feeds `input_ids`, `attention_mask` and, for `model_type` bert or
  albert only, `token_type_ids`; it takes output 0 as token embeddings `[1, L, H]` and applies
  `pooling_mode` and `normalize_result` itself. So only Transformer + Pooling (+ Normalize) models
  can be exported to ONNX.
* TORCH_SCRIPT sparse encoding: same dict input; the output dict's `output` is a `[1, vocab]` tensor
  of token weights; ml-commons turns every non-zero entry into `{token: weight}` by decoding the id
  with `tokenizer.json` (special tokens decode to "" and are dropped).

`tokenizer.json` in the zip gets `truncation.max_length = max_seq_length` (and no padding), so a
long document is cut like sentence-transformers cuts it instead of overflowing the position
embeddings inside OpenSearch.

Every export verifies itself: the packaged model is loaded back, sample texts (plus one text far
longer than max_seq_length) go through the packaged `tokenizer.json` one at a time, the way
ml-commons does it, and the result is compared with the original model's own embeddings.
A cosine below `min_cosine` (0.999) raises `ExportError`.

Reproducible: exporting the same model twice gives the same zip bytes and SHA-256 (same torch build):
zip entries are STORED with a fixed timestamp; TorchScript is traced in a fresh compilation unit (no
`___torch_mangle_N` renames on a second export in one process) and saved without its `*.debug_pkl`
records, which hold the tracing call stack (absolute paths, caller line numbers). torch.jit.save is
otherwise deterministic: the weights, code and pickles depend only on the model. The ONNX exporter
also wrote identical bytes twice here.

Pure logic: no Dagster, no boto3. torch / sentence-transformers / tokenizers are imported lazily
so that importing this module stays cheap.
"""
from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import math
import re
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

MODEL_FORMATS = ("TORCH_SCRIPT", "ONNX")
# opensearch-py-ml's ModelUploader uploads the zip in chunks of this size (MODEL_CHUNK_MAX_SIZE).
MODEL_CHUNK_SIZE_BYTES = 10_000_000
# A fixed timestamp for every zip entry, so the zip bytes (and its SHA-256) only depend on content.
ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)
DEFAULT_MIN_COSINE = 0.999
DEFAULT_SAMPLE_SENTENCES = (
    "How do I register a fine-tuned embedding model in OpenSearch?",
    "The quick brown fox jumps over the lazy dog.",
)
REGISTER_BODY_FILE = "ml_commons_register.json"
MANIFEST_FILE = "package.json"
TOKENIZER_FILE = "tokenizer.json"
MANIFEST_FORMAT_VERSION = 1

# sentence-transformers pooling mode -> name of ml-commons' TextEmbeddingModelConfig.PoolingMode enum.
# ml-commons parses the field with PoolingMode.valueOf(text.toUpperCase()), so the enum constant
# names are what it accepts ("weightedmean", as written in its docs, would be rejected).
_POOLING_TO_ML_COMMONS = {
    "mean": "MEAN",
    "cls": "CLS",
    "max": "MAX",
    "mean_sqrt_len_tokens": "MEAN_SQRT_LEN",
    "weightedmean": "WEIGHTED_MEAN",
    "lasttoken": "LAST_TOKEN",
}
# Pooling modes ml-commons' ONNX translator implements itself.
_ONNX_POOLING = ("MEAN", "MEAN_SQRT_LEN", "MAX", "WEIGHTED_MEAN", "CLS")
# ml-commons' ONNX translator adds token_type_ids only for these model types.
_ONNX_TOKEN_TYPE_MODEL_TYPES = ("bert", "albert")
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")


class ExportError(ValueError):
    """The model directory cannot be exported, or the exported package does not reproduce the model."""


@dataclass(frozen=True)
class ExportedPackage:
    out_dir: Path
    zip_path: Path
    register_body_path: Path
    manifest_path: Path
    register_body: dict
    manifest: dict
    sha256: str
    size_bytes: int
    model_format: str
    function_name: str
    embedding_dimension: int  # vocabulary size for sparse models
    max_seq_length: int
    cosine: float  # lowest cosine between the packaged model and the original over the probe texts
    seconds: float
    warnings: tuple[str, ...] = field(default_factory=tuple)


# --------------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------------


def export_dense_model(
    model_dir: str | Path,
    out_dir: str | Path,
    model_format: str = "TORCH_SCRIPT",
    name: str | None = None,
    version: str = "1.0.0",
    description: str | None = None,
    model_group_id: str | None = None,
    sample_sentences: Sequence[str] = DEFAULT_SAMPLE_SENTENCES,
    min_cosine: float = DEFAULT_MIN_COSINE,
) -> ExportedPackage:
    """Export a dense `SentenceTransformer` directory as an ml-commons TEXT_EMBEDDING package in `out_dir`."""
    started = time.perf_counter()
    model_format = _check_format(model_format)
    model_dir = _check_model_dir(model_dir)
    warnings: list[str] = []

    import torch

    model = _load(model_dir, sparse=False)
    info = _describe_dense(model, model_dir, model_format)
    warnings += info["warnings"]
    tokenizer_json = _package_tokenizer_json(model, model_dir, info["max_seq_length"])

    probes = _probe_texts(sample_sentences, info["max_seq_length"])
    # prompt="" : the reference is the model on the raw text, as ml-commons will feed it (no prompt).
    reference = model.encode(
        probes, prompt="", batch_size=len(probes), convert_to_numpy=True, normalize_embeddings=False,
        show_progress_bar=False,
    )

    file_stem = _safe_stem(name or model_dir.name)
    with torch.no_grad():
        if model_format == "TORCH_SCRIPT":
            model_bytes = _trace_dense(model, sample_sentences)
            model_file = f"{file_stem}.pt"
            produced = _run_torchscript(model_bytes, tokenizer_json, probes, "sentence_embedding")
        else:
            model_bytes = _onnx_dense(model, sample_sentences, info["model_type"])
            model_file = f"{file_stem}.onnx"
            produced = _run_onnx_dense(model_bytes, tokenizer_json, probes, info)
    verification = _compare(
        produced, reference, probes, tokenizer_json, model.tokenizer, info["max_seq_length"], min_cosine
    )

    name = name or model_dir.name
    description = description or (
        f"Fine-tuned sentence-transformers model {name}: {info['embedding_dimension']}-dimensional "
        f"{info['pooling_mode'].lower()} pooling{', normalized' if info['normalize_result'] else ''}, "
        f"inputs truncated at {info['max_seq_length']} tokens."
    )
    model_config = {
        "model_type": info["model_type"],
        "embedding_dimension": info["embedding_dimension"],
        "framework_type": "sentence_transformers",
        "pooling_mode": info["pooling_mode"],
        "normalize_result": info["normalize_result"],
        "model_max_length": info["max_seq_length"],
        "all_config": info["all_config"],
    }
    return _write_package(
        out_dir=Path(out_dir),
        kind="dense",
        model_dir=model_dir,
        zip_name=f"{file_stem}-{version}-{model_format.lower()}.zip",
        entries={model_file: model_bytes, TOKENIZER_FILE: tokenizer_json.encode("utf-8")},
        name=name,
        version=version,
        description=description,
        model_group_id=model_group_id,
        model_format=model_format,
        function_name="TEXT_EMBEDDING",
        model_config=model_config,
        embedding_dimension=info["embedding_dimension"],
        max_seq_length=info["max_seq_length"],
        extra_manifest={
            "model_type": info["model_type"],
            "pooling_mode": info["pooling_mode"],
            "normalize_result": info["normalize_result"],
            "modules": info["modules"],
        },
        verification=verification,
        warnings=warnings,
        started=started,
    )


def export_sparse_model(
    model_dir: str | Path,
    out_dir: str | Path,
    name: str | None = None,
    version: str = "1.0.0",
    description: str | None = None,
    model_group_id: str | None = None,
    sample_sentences: Sequence[str] = DEFAULT_SAMPLE_SENTENCES,
    min_cosine: float = DEFAULT_MIN_COSINE,
) -> ExportedPackage:
    """Export a SPLADE `SparseEncoder` directory as an ml-commons SPARSE_ENCODING package (TorchScript).

    The traced model takes `{"input_ids", "attention_mask"}` and returns `{"output": [batch, vocab]}`,
    the format of OpenSearch's own neural-sparse models (opensearch-py-ml `NeuralSparseModel`), with the
    special tokens' weights set to 0. The plain MLM-transformer + SpladePooling layout is supported, and an
    inference-free Router model's document route (its query side is a SPARSE_TOKENIZE package, see
    tokenizer_export.py).
    """
    started = time.perf_counter()
    model_dir = _check_model_dir(model_dir)
    warnings: list[str] = []

    import torch

    model = document_side(_load(model_dir, sparse=True))
    info = _describe_sparse(model, model_dir)
    tokenizer_json = _package_tokenizer_json(model, model_dir, info["max_seq_length"])
    special_ids = sorted(set(int(i) for i in model.tokenizer.all_special_ids))

    probes = _probe_texts(sample_sentences, info["max_seq_length"])
    reference = model.encode(probes, prompt="", batch_size=len(probes), convert_to_tensor=True, show_progress_bar=False)
    reference = reference.to_dense() if reference.is_sparse else reference
    reference = reference.clone()
    reference[:, special_ids] = 0
    reference = reference.numpy()

    file_stem = _safe_stem(name or model_dir.name)
    with torch.no_grad():
        model_bytes = _trace_sparse(model, sample_sentences, special_ids, info["vocab_size"])
        produced = _run_torchscript(model_bytes, tokenizer_json, probes, "output")
    verification = _compare(
        produced, reference, probes, tokenizer_json, model.tokenizer, info["max_seq_length"], min_cosine
    )
    verification["sample_top_tokens"] = _top_tokens(produced[0], tokenizer_json, 10)

    name = name or model_dir.name
    description = description or (
        f"Fine-tuned SPLADE sparse encoder {name}: token weights over a {info['vocab_size']}-token "
        f"vocabulary, inputs truncated at {info['max_seq_length']} tokens."
    )
    return _write_package(
        out_dir=Path(out_dir),
        kind="sparse",
        model_dir=model_dir,
        zip_name=f"{file_stem}-{version}-torch_script.zip",
        entries={f"{file_stem}.pt": model_bytes, TOKENIZER_FILE: tokenizer_json.encode("utf-8")},
        name=name,
        version=version,
        description=description,
        model_group_id=model_group_id,
        model_format="TORCH_SCRIPT",
        function_name="SPARSE_ENCODING",
        model_config=None,
        embedding_dimension=info["vocab_size"],
        max_seq_length=info["max_seq_length"],
        extra_manifest={"model_type": info["model_type"], "modules": info["modules"], "special_token_ids": special_ids},
        verification=verification,
        warnings=warnings,
        started=started,
    )


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def total_chunks(size_bytes: int, chunk_size_bytes: int = MODEL_CHUNK_SIZE_BYTES) -> int:
    """How many `POST .../chunk/<n>` uploads ml-commons expects for a zip of `size_bytes`."""
    return max(1, math.ceil(size_bytes / chunk_size_bytes))


# --------------------------------------------------------------------------------------------------
# loading and inspecting
# --------------------------------------------------------------------------------------------------


def _check_format(model_format: str) -> str:
    normalized = str(model_format).upper().replace("-", "_")
    if normalized == "TORCHSCRIPT":
        normalized = "TORCH_SCRIPT"
    if normalized not in MODEL_FORMATS:
        raise ExportError(f"model_format must be one of {MODEL_FORMATS}, got {model_format!r}")
    if normalized == "ONNX" and importlib.util.find_spec("onnx") is None:
        raise ExportError(
            "ONNX export needs the 'onnx' package (torch.onnx.export serialises through it): "
            "pip install onnx, or export with model_format='TORCH_SCRIPT'"
        )
    return normalized


def _check_model_dir(model_dir: str | Path) -> Path:
    path = Path(model_dir).expanduser()
    if not path.exists():
        raise ExportError(f"model directory {path} does not exist")
    if not path.is_dir():
        raise ExportError(f"{path} is not a directory; pass the folder a sentence-transformers model was saved to")
    path = path.resolve()
    if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
        raise ExportError(
            f"no model in {path}: expected a sentence-transformers folder (modules.json) or a Hugging Face "
            f"model folder (config.json); found {sorted(p.name for p in path.iterdir())[:10]}"
        )
    transformer_dir = _transformer_dir(path)
    if not any((transformer_dir / weights).is_file() for weights in _WEIGHT_FILES):
        raise ExportError(
            f"no model weights in {transformer_dir}: expected one of {', '.join(_WEIGHT_FILES)}"
        )
    return path


def _transformer_dir(model_dir: Path) -> Path:
    """The folder of the Transformer module (modules.json entry), where config.json / tokenizer.json live.

    For an inference-free Router model that is the document route's Transformer (router_config.json)."""
    modules_file = model_dir / "modules.json"
    if modules_file.is_file():
        modules = _read_json(modules_file)
        for entry in modules:
            kind = str(entry.get("type", "")).rsplit(".", 1)[-1]
            if kind in ("Transformer", "MLMTransformer"):
                return model_dir / entry.get("path", "")
            if kind == "Router":
                router_dir = model_dir / entry.get("path", "")
                router = _read_json(router_dir / "router_config.json")
                types = router.get("types", {})
                for name in router.get("structure", {}).get("document", []):
                    if str(types.get(name, "")).rsplit(".", 1)[-1] in ("Transformer", "MLMTransformer"):
                        return router_dir / name
    return model_dir


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ExportError(f"{path} is missing") from exc
    except json.JSONDecodeError as exc:
        raise ExportError(f"{path} is not valid JSON: {exc.msg}") from exc


def _load(model_dir: Path, sparse: bool):
    """Load on CPU with eager attention: the traced graph then uses plain matmul/softmax ops only (no
    scaled_dot_product_attention), which older libtorch builds inside OpenSearch can also run."""
    kwargs = dict(device="cpu", local_files_only=True, model_kwargs={"attn_implementation": "eager"})
    try:
        if sparse:
            from sentence_transformers import SparseEncoder

            model = SparseEncoder(str(model_dir), **kwargs)
        else:
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(str(model_dir), **kwargs)
    except Exception as exc:  # noqa: BLE001 - any loader failure means "not an exportable model"
        kind = "SparseEncoder" if sparse else "SentenceTransformer"
        raise ExportError(f"could not load {model_dir} as a {kind}: {type(exc).__name__}: {exc}") from exc
    model.eval()
    return model


def _module_names(model) -> list[str]:
    return [type(module).__name__ for module in model]


def _hf_config(model, model_dir: Path) -> tuple[Any, str]:
    first = model[0]
    auto_model = getattr(first, "auto_model", None)
    if auto_model is None:
        raise ExportError(
            f"the first module of {model_dir} is {type(first).__name__}, not a Hugging Face Transformer; "
            "ml-commons local models need a transformer with a tokenizer.json"
        )
    config = auto_model.config
    config_file = _transformer_dir(model_dir) / "config.json"
    if config_file.is_file():
        all_config = json.dumps(json.loads(config_file.read_text(encoding="utf-8")), ensure_ascii=False)
    else:
        all_config = config.to_json_string(use_diff=False)
    return config, all_config


def _max_seq_length(model, config) -> int:
    length = model.max_seq_length or getattr(model.tokenizer, "model_max_length", None)
    max_positions = getattr(config, "max_position_embeddings", None)
    if isinstance(max_positions, int) and max_positions > 0:
        # RoBERTa-style position ids start after the padding index, so two positions are not usable.
        if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert", "mpnet", "longformer"):
            max_positions -= 2
        length = min(length, max_positions) if length else max_positions
    if not length or length <= 0 or length > 1_000_000:
        raise ExportError("cannot tell the model's max_seq_length; set model.max_seq_length before saving it")
    return int(length)


def _describe_dense(model, model_dir: Path, model_format: str) -> dict:
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    warnings: list[str] = []
    names = _module_names(model)
    if not isinstance(model[0], Transformer):
        raise ExportError(f"unsupported module layout {names}: the first module must be a Transformer")
    config, all_config = _hf_config(model, model_dir)
    poolings = [module for module in model if isinstance(module, Pooling)]
    if len(poolings) != 1:
        raise ExportError(f"unsupported module layout {names}: expected exactly one Pooling module")
    st_mode = poolings[0].pooling_mode
    if not isinstance(st_mode, str):
        raise ExportError(f"pooling {st_mode} combines several modes; ml-commons supports one pooling mode")
    pooling_mode = _POOLING_TO_ML_COMMONS.get(st_mode)
    if pooling_mode is None:
        raise ExportError(f"pooling mode {st_mode!r} has no ml-commons equivalent")
    normalize_result = any(isinstance(module, Normalize) for module in model)
    if model_format == "ONNX":
        extra = [n for m, n in zip(model, names) if not isinstance(m, (Transformer, Pooling, Normalize))]
        if extra or [n for n in names if n != "Normalize"] != ["Transformer", "Pooling"]:
            raise ExportError(
                f"ONNX export supports Transformer -> Pooling [-> Normalize] only (ml-commons pools the ONNX "
                f"token embeddings itself); this model is {names}: use model_format='TORCH_SCRIPT'"
            )
        if pooling_mode not in _ONNX_POOLING:
            raise ExportError(f"ml-commons' ONNX runtime has no {pooling_mode} pooling: use TORCH_SCRIPT")
        if not getattr(poolings[0], "include_prompt", True):
            warnings.append("Pooling.include_prompt=False is ignored by ml-commons' ONNX pooling")
    prompts = {k: v for k, v in (getattr(model, "prompts", None) or {}).items() if v}
    if prompts:
        warnings.append(
            f"the model defines prompts {sorted(prompts)}; ml-commons does not add them, so callers must "
            "prefix the text themselves (default prompt: "
            f"{getattr(model, 'default_prompt_name', None)!r}); the package was verified on unprompted text"
        )
    dimension = _dense_dimension(model)
    return {
        "model_type": str(getattr(config, "model_type", "") or type(model[0].auto_model).__name__.lower()),
        "embedding_dimension": dimension,
        "pooling_mode": pooling_mode,
        "normalize_result": normalize_result,
        "max_seq_length": _max_seq_length(model, config),
        "all_config": all_config,
        "modules": names,
        "warnings": warnings,
    }


def _dense_dimension(model) -> int:
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    dimension = getter()
    if not dimension:
        raise ExportError("the model does not report its embedding dimension")
    return int(dimension)


def document_side(model):
    """An inference-free (Router) SparseEncoder's document route as a SparseEncoder of its own; other models as is."""
    modules = list(model)
    if len(modules) != 1 or type(modules[0]).__name__ != "Router":
        return model
    from sentence_transformers import SparseEncoder

    side = SparseEncoder(modules=list(modules[0].sub_modules["document"]), device="cpu")
    side.eval()
    return side


def _describe_sparse(model, model_dir: Path) -> dict:
    from sentence_transformers.sparse_encoder.modules import SpladePooling, Transformer

    names = _module_names(model)
    if len(names) != 2 or not isinstance(model[0], Transformer) or not isinstance(model[1], SpladePooling):
        raise ExportError(
            f"unsupported sparse layout {names}: only Transformer(fill-mask) -> SpladePooling can be exported "
            "(for an inference-free Router model, its document route)"
        )
    config, _ = _hf_config(model, model_dir)
    vocab_size = int(getattr(config, "vocab_size", 0) or len(model.tokenizer))
    return {
        "model_type": str(getattr(config, "model_type", "")),
        "vocab_size": vocab_size,
        "max_seq_length": _max_seq_length(model, config),
        "modules": names,
    }


# --------------------------------------------------------------------------------------------------
# tokenizer.json
# --------------------------------------------------------------------------------------------------


def _package_tokenizer_json(model, model_dir: Path, max_seq_length: int) -> str:
    """tokenizer.json for the zip: the model's own file with truncation at max_seq_length and no padding.

    The file on disk is kept byte-for-byte apart from those two keys (so the tokenizers build inside
    OpenSearch reads what the model was saved with); when the Transformer lowercases in Python
    (do_lower_case), or there is no file, the in-memory fast tokenizer is serialised instead.
    """
    from tokenizers import Tokenizer

    tokenizer = model.tokenizer
    source = _transformer_dir(model_dir) / TOKENIZER_FILE
    if source.is_file() and not getattr(model[0], "do_lower_case", False):
        data = json.loads(source.read_text(encoding="utf-8"))
    elif getattr(tokenizer, "is_fast", False):
        data = json.loads(tokenizer.backend_tokenizer.to_str())
    else:
        raise ExportError(
            f"{model_dir} has no tokenizer.json and a slow tokenizer; ml-commons needs a Hugging Face fast "
            "tokenizer (tokenizer.json)"
        )
    data["truncation"] = {"direction": "Right", "max_length": max_seq_length, "strategy": "LongestFirst", "stride": 0}
    data["padding"] = None
    text = json.dumps(data, ensure_ascii=False)
    try:
        Tokenizer.from_str(text)
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"the patched tokenizer.json does not load: {exc}") from exc
    return text


def _probe_texts(sample_sentences: Sequence[str], max_seq_length: int) -> list[str]:
    samples = [s for s in sample_sentences if isinstance(s, str) and s.strip()]
    if not samples:
        raise ExportError("sample_sentences must hold at least one non-empty text")
    words = " ".join(samples).split()
    long_text = " ".join(words[i % len(words)] for i in range(2 * max_seq_length + 64))
    return samples + [long_text]


def _encode_one(tokenizer, text: str) -> tuple[list[int], list[int], list[int]]:
    encoding = tokenizer.encode(text)
    return list(encoding.ids), list(encoding.attention_mask), list(encoding.type_ids)


# --------------------------------------------------------------------------------------------------
# TorchScript
# --------------------------------------------------------------------------------------------------


def _example_features(model, sample_sentences: Sequence[str]) -> dict:
    """Two texts of different lengths, padded: the trace then sees a real attention mask."""
    texts = [s for s in sample_sentences if s.strip()][:2]
    if len(texts) < 2:
        texts = list(texts) + ["a"]
    batch = model.tokenizer(texts, padding=True, truncation=True, max_length=model.max_seq_length, return_tensors="pt")
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def _trace(module, example: dict):
    """torch.jit.trace in a fresh TorchScript compilation unit, without storing the example inputs.

    TorchScript registers every traced class under its qualified name in one process-wide compilation
    unit and renames repeats (`___torch_mangle_N`), so a second export in the same process would
    otherwise serialise other code file names and get another SHA-256. `torch.jit._state._python_cu`
    is private API: when it is missing the trace still works, only without that guarantee.
    """
    import torch
    import torch.jit._state as jit_state

    kwargs = dict(strict=False, check_trace=False, _store_inputs=False)
    if not hasattr(jit_state, "_python_cu"):
        return torch.jit.trace(module, (example,), **kwargs)
    saved = jit_state._python_cu
    unit = torch._C.CompilationUnit()
    jit_state._python_cu = unit
    try:
        return torch.jit.trace(module, (example,), _compilation_unit=unit, **kwargs)
    finally:
        jit_state._python_cu = saved


def _save_script(traced) -> bytes:
    """torch.jit.save, then drop the `*.debug_pkl` records.

    Those hold the Python call stack seen while tracing (absolute file paths and the caller's line
    numbers), so they differ between two exports of the same model and leak local paths. The loader
    only reads them when present (they feed error messages). The archive is rewritten with torch's
    own PyTorchFileWriter, which recomputes `.data/serialization_id` from the remaining records.
    """
    import torch

    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    raw = buffer.getvalue()
    reader = torch._C.PyTorchFileReader(io.BytesIO(raw))
    stripped = io.BytesIO()
    writer = torch._C.PyTorchFileWriter(stripped)
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        records = [info.filename.split("/", 1)[1] for info in archive.infolist()]
    for record in records:
        if record.endswith(".debug_pkl") or record == ".data/serialization_id":
            continue
        data = reader.get_record(record)
        writer.write_record(record, data, len(data))
    writer.write_end_of_file()
    return stripped.getvalue()


def _trace_dense(model, sample_sentences: Sequence[str]) -> bytes:
    import torch

    class DenseForOpenSearch(torch.nn.Module):
        """dict(input_ids, attention_mask) -> dict(sentence_embedding), what ml-commons' TorchScript
        sentence-transformers translator feeds and reads."""

        def __init__(self, encoder):
            super().__init__()
            self.encoder = encoder

        def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            out = self.encoder({"input_ids": features["input_ids"], "attention_mask": features["attention_mask"]})
            return {"sentence_embedding": out["sentence_embedding"]}

    example = _example_features(model, sample_sentences)
    traced = _trace(DenseForOpenSearch(model).eval(), example)
    return _save_script(traced)


def _trace_sparse(model, sample_sentences: Sequence[str], special_ids: list[int], vocab_size: int) -> bytes:
    import torch

    keep = torch.ones(vocab_size)
    keep[special_ids] = 0.0

    class SparseForOpenSearch(torch.nn.Module):
        """dict(input_ids, attention_mask) -> dict(output=[batch, vocab] token weights), the format of
        OpenSearch's neural-sparse TorchScript models."""

        def __init__(self, encoder, keep_mask):
            super().__init__()
            self.encoder = encoder
            self.register_buffer("keep_mask", keep_mask)

        def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            out = self.encoder({"input_ids": features["input_ids"], "attention_mask": features["attention_mask"]})
            return {"output": out["sentence_embedding"] * self.keep_mask}

    example = _example_features(model, sample_sentences)
    traced = _trace(SparseForOpenSearch(model, keep).eval(), example)
    return _save_script(traced)


def _run_torchscript(model_bytes: bytes, tokenizer_json: str, texts: list[str], output_key: str):
    """Run the saved TorchScript file like ml-commons does: one text at a time, no padding."""
    import numpy as np
    import torch
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(tokenizer_json)
    try:
        scripted = torch.jit.load(io.BytesIO(model_bytes), map_location="cpu")
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"the saved TorchScript file does not load back: {exc}") from exc
    # A handful of calls: skip the JIT's profiling/fusion passes, which cost seconds and change nothing here.
    with torch.jit.optimized_execution(False):
        rows = [_run_scripted(scripted, tokenizer, text, output_key) for text in texts]
    return np.stack(rows)


def _run_scripted(scripted, tokenizer, text: str, output_key: str):
    import torch

    ids, mask, _ = _encode_one(tokenizer, text)
    features = {"input_ids": torch.tensor([ids], dtype=torch.long), "attention_mask": torch.tensor([mask], dtype=torch.long)}
    try:
        output = scripted(features)
    except Exception as exc:  # noqa: BLE001 - e.g. more tokens than position embeddings
        raise ExportError(f"the packaged TorchScript model fails on a {len(ids)}-token input: {exc}") from exc
    if not isinstance(output, dict) or output_key not in output:
        raise ExportError(f"the traced model returned {type(output).__name__} without {output_key!r}")
    return output[output_key][0].float().numpy()


# --------------------------------------------------------------------------------------------------
# ONNX
# --------------------------------------------------------------------------------------------------


def _onnx_dense(model, sample_sentences: Sequence[str], model_type: str) -> bytes:
    import torch

    with_token_types = model_type.lower() in _ONNX_TOKEN_TYPE_MODEL_TYPES
    auto_model = model[0].auto_model.eval()

    class TokenEmbeddings(torch.nn.Module):
        def __init__(self, backbone):
            super().__init__()
            self.backbone = backbone

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                kwargs["token_type_ids"] = token_type_ids
            return self.backbone(**kwargs, return_dict=False)[0]

    example = _example_features(model, sample_sentences)
    args = [example["input_ids"], example["attention_mask"]]
    names = ["input_ids", "attention_mask"]
    if with_token_types:
        args.append(torch.zeros_like(example["input_ids"]))
        names.append("token_type_ids")
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["last_hidden_state"] = {0: "batch", 1: "sequence"}
    buffer = io.BytesIO()
    try:
        # The TorchScript-based exporter (dynamo=False) writes a single self-contained file and needs
        # only the onnx package; opset 15 is what opensearch-py-ml exports with.
        torch.onnx.export(
            TokenEmbeddings(auto_model),
            tuple(args),
            buffer,
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=15,
            dynamo=False,
        )
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"torch.onnx.export failed: {type(exc).__name__}: {exc}") from exc
    return buffer.getvalue()


def _run_onnx_dense(model_bytes: bytes, tokenizer_json: str, texts: list[str], info: dict):
    """Run the ONNX file and pool like ml-commons' ONNXSentenceTransformerTextEmbeddingTranslator."""
    import numpy as np
    import onnxruntime
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(tokenizer_json)
    session = onnxruntime.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    rows = []
    for text in texts:
        ids, mask, type_ids = _encode_one(tokenizer, text)
        feed = {"input_ids": np.array([ids], dtype=np.int64), "attention_mask": np.array([mask], dtype=np.int64)}
        if info["model_type"].lower() in _ONNX_TOKEN_TYPE_MODEL_TYPES:
            feed["token_type_ids"] = np.array([type_ids], dtype=np.int64)
        if set(feed) != wanted:
            raise ExportError(f"ONNX inputs {sorted(wanted)} differ from what ml-commons feeds {sorted(feed)}")
        try:
            tokens = session.run(None, feed)[0][0].astype(np.float64)  # [L, H]
        except Exception as exc:  # noqa: BLE001
            raise ExportError(f"the packaged ONNX model fails on a {len(ids)}-token input: {exc}") from exc
        rows.append(_ml_commons_pool(tokens, np.array(mask, dtype=np.float64), info["pooling_mode"], info["normalize_result"]))
    return np.stack(rows)


def _ml_commons_pool(tokens, mask, pooling_mode: str, normalize: bool):
    import numpy as np

    m = mask[:, None]
    if pooling_mode == "MEAN":
        vector = (tokens * m).sum(0) / max(mask.sum(), 1e-9)
    elif pooling_mode == "MEAN_SQRT_LEN":
        vector = (tokens * m).sum(0) / math.sqrt(max(mask.sum(), 1e-9))
    elif pooling_mode == "MAX":
        vector = np.where(m > 0, tokens, -1e9).max(0)
    elif pooling_mode == "WEIGHTED_MEAN":
        weights = np.arange(1, tokens.shape[0] + 1, dtype=np.float64)[:, None] * m
        vector = (tokens * weights).sum(0) / weights.sum(0)
    elif pooling_mode == "CLS":
        vector = tokens[0]
    else:  # guarded in _describe_dense
        raise ExportError(f"no ONNX pooling for {pooling_mode}")
    if normalize:
        vector = vector / max(np.linalg.norm(vector), 1e-12)
    return vector


# --------------------------------------------------------------------------------------------------
# verification, zip, manifest
# --------------------------------------------------------------------------------------------------


def _compare(produced, reference, texts, tokenizer_json, hf_tokenizer, max_seq_length, min_cosine) -> dict:
    import numpy as np
    from tokenizers import Tokenizer

    if produced.shape != reference.shape:
        raise ExportError(f"packaged model output shape {produced.shape} differs from the model's {reference.shape}")
    produced = produced.astype(np.float64)
    reference = reference.astype(np.float64)
    norms = np.linalg.norm(produced, axis=1) * np.linalg.norm(reference, axis=1)
    cosines = (produced * reference).sum(1) / np.maximum(norms, 1e-12)
    tokenizer = Tokenizer.from_str(tokenizer_json)
    lengths, tokens_match = [], []
    for text in texts:
        ids = tokenizer.encode(text).ids
        lengths.append(len(ids))
        expected = hf_tokenizer(text, truncation=True, max_length=max_seq_length)["input_ids"]
        tokens_match.append(list(ids) == list(expected))
    details = {
        "texts": len(texts),
        "cosines": [round(float(c), 6) for c in cosines],
        "min_cosine": float(cosines.min()),
        "max_abs_diff": float(np.abs(produced - reference).max()),
        "token_counts": lengths,
        "tokens_match_model_tokenizer": all(tokens_match),
        "threshold": min_cosine,
    }
    if lengths[-1] > max_seq_length:
        raise ExportError(f"tokenizer.json did not truncate: the long probe has {lengths[-1]} > {max_seq_length} tokens")
    if not np.isfinite(cosines).all() or cosines.min() < min_cosine:
        raise ExportError(
            f"the exported model does not reproduce the original: cosines {details['cosines']} "
            f"(threshold {min_cosine}); tokenizer ids match the model's tokenizer: {tokens_match}"
        )
    return details


def _top_tokens(weights, tokenizer_json: str, k: int) -> dict[str, float]:
    """The ml-commons view of a sparse vector: id -> token (special tokens dropped), top k by weight."""
    import numpy as np
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(tokenizer_json)
    result: dict[str, float] = {}
    for index in np.argsort(-weights)[: 4 * k]:
        if weights[index] <= 0 or len(result) >= k:
            break
        token = tokenizer.decode([int(index)], skip_special_tokens=True)
        if token:
            result[token] = round(float(weights[index]), 4)
    return result


def _safe_stem(name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name.strip()).strip("._")
    return stem or "model"


def _zip_bytes(entries: dict[str, bytes]) -> bytes:
    """Deterministic zip: sorted entries, fixed timestamp and permissions, STORED (no compression).

    STORED keeps the bytes independent of the zlib build (deflate saves only ~8% on float weights and
    costs ~5 s per 90 MB) and writes sizes in the local headers (no data descriptors), which Java's
    ZipInputStream, used by DJL inside ml-commons, requires for stored entries.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE_TIME)
            info.compress_type = zipfile.ZIP_STORED
            info.create_system = 3
            info.external_attr = 0o100644 << 16
            archive.writestr(info, entries[name])
    return buffer.getvalue()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("torch", "sentence-transformers", "transformers", "tokenizers"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            pass
    return found


def _write_package(
    *,
    out_dir: Path,
    kind: str,
    model_dir: Path,
    zip_name: str,
    entries: dict[str, bytes],
    name: str,
    version: str,
    description: str,
    model_group_id: str | None,
    model_format: str,
    function_name: str,
    model_config: dict | None,
    embedding_dimension: int,
    max_seq_length: int,
    extra_manifest: dict,
    verification: dict,
    warnings: list[str],
    started: float,
) -> ExportedPackage:
    out_dir.mkdir(parents=True, exist_ok=True)
    zip_data = _zip_bytes(entries)
    digest = hashlib.sha256(zip_data).hexdigest()
    size = len(zip_data)
    zip_path = out_dir / zip_name
    _write_atomic(zip_path, zip_data)

    body: dict[str, Any] = {
        "name": name,
        "version": str(version),
        "description": description,
        "model_format": model_format,
        "function_name": function_name,
        "model_content_hash_value": digest,
        "model_content_size_in_bytes": size,
        "total_chunks": total_chunks(size),
    }
    if model_group_id:
        body["model_group_id"] = model_group_id
    if model_config is not None:
        body["model_config"] = model_config
    manifest = {
        "format_version": MANIFEST_FORMAT_VERSION,
        "kind": kind,
        "name": name,
        "version": str(version),
        "model_format": model_format,
        "function_name": function_name,
        "source_model_dir": str(model_dir),
        "embedding_dimension": embedding_dimension,
        "max_seq_length": max_seq_length,
        **extra_manifest,
        "files": {
            "zip": zip_name,
            "register_body": REGISTER_BODY_FILE,
            "manifest": MANIFEST_FILE,
        },
        "zip": {
            "file": zip_name,
            "sha256": digest,
            "size_bytes": size,
            "entries": [
                {"name": entry, "sha256": hashlib.sha256(entries[entry]).hexdigest(), "size_bytes": len(entries[entry])}
                for entry in sorted(entries)
            ],
        },
        "upload": {
            "register_meta": "POST /_plugins/_ml/models/meta  (body: ml_commons_register.json)",
            "upload_chunk": "POST /_plugins/_ml/models/{model_id}/chunk/{chunk_number}",
            "chunk_size_bytes": MODEL_CHUNK_SIZE_BYTES,
            "total_chunks": total_chunks(size),
        },
        "verification": verification,
        "versions": _versions(),
        "warnings": warnings,
    }
    body_path = out_dir / REGISTER_BODY_FILE
    manifest_path = out_dir / MANIFEST_FILE
    _write_atomic(body_path, _json_bytes(body))
    _write_atomic(manifest_path, _json_bytes(manifest))
    return ExportedPackage(
        out_dir=out_dir,
        zip_path=zip_path,
        register_body_path=body_path,
        manifest_path=manifest_path,
        register_body=body,
        manifest=manifest,
        sha256=digest,
        size_bytes=size,
        model_format=model_format,
        function_name=function_name,
        embedding_dimension=embedding_dimension,
        max_seq_length=max_seq_length,
        cosine=float(verification["min_cosine"]),
        seconds=round(time.perf_counter() - started, 2),
        warnings=tuple(warnings),
    )
