"""Synthetic query generation: documents in, Bedrock batch inference output records out.

Backends: "smollm2" (default; SmolLM2-135M-Instruct from a registry package, offline, CPU) and "openai"
(any OpenAI-compatible chat completions server: Ollama, vLLM). Production runs Bedrock batch inference,
which writes the same record layout; `bedrock_records.parse_output_record` reads all of them.

Importing this package loads neither torch nor requests; the backends are imported by `make_generator`.
"""
from __future__ import annotations

from finetune_assets.core.querygen.base import ProgressCallback, QueryGenerator
from finetune_assets.core.querygen.bedrock_records import (
    GeneratedQuery,
    ParsedRecord,
    build_model_input,
    make_error_record,
    make_output_record,
    parse_output_record,
)
from finetune_assets.core.querygen.prompts import build_query_prompt

BACKENDS = ("smollm2", "openai")
_ALIASES = {
    "smollm2": "smollm2", "smollm": "smollm2", "local": "smollm2",
    "openai": "openai", "openai-compatible": "openai", "ollama": "openai", "vllm": "openai",
}


def make_generator(backend: str = "smollm2", **options) -> QueryGenerator:
    """A query generator by backend name; `options` go to its constructor.

    smollm2: model_path, batch_size, max_new_tokens, temperature, seed, num_threads, cache_dir, show_progress...
    openai: base_url, model, api_key, timeout, max_retries, concurrency, json_mode...
    """
    name = _ALIASES.get((backend or "smollm2").strip().lower())
    if name == "smollm2":
        from finetune_assets.core.querygen.smollm import SmolLM2QueryGenerator

        return SmolLM2QueryGenerator(**options)
    if name == "openai":
        from finetune_assets.core.querygen.openai_compatible import OpenAICompatibleQueryGenerator

        return OpenAICompatibleQueryGenerator(**options)
    raise ValueError(f"unknown query generator backend {backend!r}; use one of {', '.join(BACKENDS)}")


__all__ = [
    "BACKENDS", "GeneratedQuery", "ParsedRecord", "ProgressCallback", "QueryGenerator", "build_model_input",
    "build_query_prompt", "make_error_record", "make_generator", "make_output_record", "parse_output_record",
]
