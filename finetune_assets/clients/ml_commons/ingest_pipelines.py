"""The ingest pipeline that writes a registered model's field as documents are indexed: a ``text_embedding``
processor for a dense model, ``sparse_encoding`` for a sparse one, with OpenSearch's document pruning
(``prune_type: max_ratio``, 2.19+) when a prune ratio is given."""
from __future__ import annotations

from finetune_assets.clients.ml_commons.api import DENSE, SPARSE

# The reason OpenSearch's ingest service gives for processor parameters it does not know (ConfigurationUtils).
UNSUPPORTED_PARAMETERS = "doesn't support one or more provided configuration parameters"


def ingest_processor(function_name: str, model_id: str, *, text_field: str = "text", vector_field: str = "",
                     prune_ratio: float = 0.0) -> dict:
    """One processor: `text_field` -> `vector_field` ('' = embedding / sparse) through the model; a sparse one
    keeps each document's tokens of at least `prune_ratio` times its largest weight when `prune_ratio` > 0."""
    if function_name == DENSE:
        if prune_ratio:
            raise ValueError("document pruning applies to sparse models only")
        return {"text_embedding": {"model_id": model_id, "field_map": {text_field: vector_field or "embedding"}}}
    if function_name != SPARSE:
        raise ValueError(f"function_name must be {DENSE} or {SPARSE}, got {function_name!r}")
    if not 0 <= prune_ratio < 1:
        raise ValueError(f"a max_ratio prune ratio must be in [0, 1), got {prune_ratio}")
    processor: dict = {"model_id": model_id, "field_map": {text_field: vector_field or "sparse"}}
    if prune_ratio:
        processor.update({"prune_type": "max_ratio", "prune_ratio": prune_ratio})
    return {"sparse_encoding": processor}


def ingest_pipeline_body(function_name: str, model_id: str, description: str, **processor) -> dict:
    """`PUT /_ingest/pipeline/<name>` body with the one processor of `ingest_processor`."""
    return {"description": description, "processors": [ingest_processor(function_name, model_id, **processor)]}
