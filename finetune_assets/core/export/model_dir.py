"""Load a saved sentence-transformers model for export and describe what ml-commons needs to know about it.

Models load on CPU with eager attention, and only the layouts ml-commons can run are accepted: a Transformer
with one Pooling (and optional Normalize) for dense models, Transformer(fill-mask) -> SpladePooling for sparse
ones (for an inference-free Router model, its document route).
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from finetune_assets.core.export.package import ExportError

MODEL_FORMATS = ("TORCH_SCRIPT", "ONNX")

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
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")


def check_format(model_format: str) -> str:
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


def check_model_dir(model_dir: str | Path) -> Path:
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
    weights_dir = transformer_dir(path)
    if not any((weights_dir / weights).is_file() for weights in _WEIGHT_FILES):
        raise ExportError(
            f"no model weights in {weights_dir}: expected one of {', '.join(_WEIGHT_FILES)}"
        )
    return path


def transformer_dir(model_dir: Path) -> Path:
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


def load_model(model_dir: Path, sparse: bool):
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
    config_file = transformer_dir(model_dir) / "config.json"
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


def describe_dense(model, model_dir: Path, model_format: str) -> dict:
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


def describe_sparse(model, model_dir: Path) -> dict:
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
