"""Prove a registered model works for search: index sample texts through it and run one neural query, and one
hybrid query through a search pipeline when one is given."""
from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence

from opensearchpy import OpenSearch
from opensearchpy import exceptions as os_errors

from finetune_assets.clients.ml_commons.api import (
    DENSE,
    ML,
    SPARSE,
    TOKENIZE,
    Api,
    describe_error,
    error_text,
    setting_hint,
)
from finetune_assets.clients.ml_commons.errors import PruningUnsupportedError, VerificationError
from finetune_assets.clients.ml_commons.ingest_pipelines import UNSUPPORTED_PARAMETERS, ingest_pipeline_body
from finetune_assets.clients.retry import RetryPolicy

log = logging.getLogger(__name__)


def _dense_dimension(api: Api, model_id: str, probe_text: str) -> int:
    try:
        model = api.call("GET", f"{ML}/models/{model_id}")
    except os_errors.TransportError as exc:
        raise VerificationError(f"GET {ML}/models/{model_id} failed: {describe_error(exc)}") from exc
    dimension = (model.get("model_config") or {}).get("embedding_dimension")
    if dimension:
        return int(dimension)
    try:   # a remote model has no model_config: ask it for one embedding
        answer = api.call("POST", f"{ML}/models/{model_id}/_predict", body={"text_docs": [probe_text]})
        output = answer["inference_results"][0]["output"][0]
        return int(output.get("shape", [len(output.get("data", []))])[-1])
    except (os_errors.TransportError, KeyError, IndexError, TypeError, ValueError) as exc:
        raise VerificationError(f"cannot tell the embedding dimension of model {model_id} (no model_config, and "
                                f"_predict gave {exc}); pass dimension=") from exc


def verify_neural_search(client: OpenSearch, model_id: str, function_name: str, texts: Sequence[str], query: str,
                         *, dimension: int | None = None, query_model_id: str | None = None,
                         document_prune_ratio: float = 0.0, retry: RetryPolicy | None = None,
                         sleep: Callable[[float], None] = time.sleep) -> str:
    """Index ``texts`` through an ingest pipeline that uses the model, run one ``neural`` (TEXT_EMBEDDING) or
    ``neural_sparse`` (SPARSE_ENCODING) query, and return the top hit's id (``doc-<i>`` for ``texts[i]``).

    ``query_model_id``: a SPARSE_TOKENIZE model that encodes the query instead (inference-free sparse search:
    documents through ``model_id``, queries through the tokenizer's IDF weights).
    ``document_prune_ratio``: the sparse_encoding processor prunes each document (max_ratio, OpenSearch 2.19+); a
    cluster without pruning raises PruningUnsupportedError.
    The test index and pipeline have unique names and are deleted afterwards, also when something fails.
    """
    return _verify(client, model_id, function_name, texts, query, dimension=dimension,
                   query_model_id=query_model_id, document_prune_ratio=document_prune_ratio, retry=retry,
                   sleep=sleep)["neural"]


def verify_hybrid_search(client: OpenSearch, model_id: str, function_name: str, texts: Sequence[str], query: str,
                         search_pipeline: dict, *, dimension: int | None = None, query_model_id: str | None = None,
                         document_prune_ratio: float = 0.0, retry: RetryPolicy | None = None,
                         sleep: Callable[[float], None] = time.sleep) -> dict:
    """As verify_neural_search, then one ``hybrid`` query (BM25 ``match`` + the model) through a scratch search
    pipeline with the body ``search_pipeline``; returns the top hit of each: {"neural": id, "hybrid": id}."""
    return _verify(client, model_id, function_name, texts, query, dimension=dimension,
                   query_model_id=query_model_id, document_prune_ratio=document_prune_ratio, retry=retry,
                   sleep=sleep, search_pipeline=search_pipeline)


def _verify(client: OpenSearch, model_id: str, function_name: str, texts: Sequence[str], query: str, *,
            dimension: int | None, query_model_id: str | None, document_prune_ratio: float,
            retry: RetryPolicy | None, sleep: Callable[[float], None], search_pipeline: dict | None = None) -> dict:
    if function_name not in (DENSE, SPARSE):
        raise ValueError(f"function_name must be {DENSE} or {SPARSE}, got {function_name!r}")
    if query_model_id and function_name != SPARSE:
        raise ValueError(f"query_model_id (a {TOKENIZE} model) goes with a {SPARSE} document model only")
    if not texts:
        raise ValueError("give at least one text to index")
    api = Api(client, retry, sleep)
    suffix = uuid.uuid4().hex[:10]
    index = f"finetune-assets-verify-{suffix}"
    pipeline = f"finetune-assets-verify-{suffix}"
    if function_name == DENSE:
        dimension = dimension or _dense_dimension(api, model_id, texts[0])
        vector_field = {"type": "knn_vector", "dimension": dimension,
                        "method": {"name": "hnsw", "engine": "lucene", "space_type": "cosinesimil"}}
        settings = {"index.knn": True}
        search = {"neural": {"embedding": {"query_text": query, "model_id": model_id, "k": len(texts)}}}
        field_name = "embedding"
    else:
        vector_field = {"type": "rank_features"}
        settings = {}
        search = {"neural_sparse": {"sparse": {"query_text": query, "model_id": query_model_id or model_id}}}
        field_name = "sparse"
    made_pipeline = made_index = made_search_pipeline = False
    try:
        step = f"PUT /_ingest/pipeline/{pipeline}"
        body = ingest_pipeline_body(function_name, model_id, f"finetune-assets check of model {model_id}",
                                    vector_field=field_name, prune_ratio=document_prune_ratio)
        try:
            api.call("PUT", f"/_ingest/pipeline/{pipeline}", body=body)
        except os_errors.TransportError as exc:
            if document_prune_ratio and exc.status_code == 400 and UNSUPPORTED_PARAMETERS in error_text(exc):
                raise PruningUnsupportedError(f"{step} refused the document pruning: {describe_error(exc)} "
                                              "(prune_type needs OpenSearch 2.19 or later)") from exc
            raise
        made_pipeline = True
        step = f"PUT /{index}"
        api.call("PUT", f"/{index}", body={
            "settings": {**settings, "index.default_pipeline": pipeline, "number_of_shards": 1,
                         "number_of_replicas": 0},
            "mappings": {"properties": {"text": {"type": "text"}, field_name: vector_field}},
        })
        made_index = True
        step = "POST /_bulk"
        lines = []
        for number, text in enumerate(texts):
            lines.append(json.dumps({"index": {"_index": index, "_id": f"doc-{number}"}}))
            lines.append(json.dumps({"text": text}))
        answer = api.call("POST", "/_bulk", body="\n".join(lines) + "\n", params={"refresh": "true"})
        if answer.get("errors"):
            failed = [item for item in answer.get("items", []) if (item.get("index") or {}).get("error")]
            error = failed[0]["index"]["error"] if failed else {}
            reason = error.get("reason", error) if isinstance(error, dict) else error
            raise VerificationError(f"{len(failed)} of {len(texts)} documents failed in the ingest pipeline "
                                    f"(model {model_id}): {reason}.{setting_hint(str(reason))}")
        step = f"POST /{index}/_search"
        result = api.call("POST", f"/{index}/_search", body={"size": len(texts), "query": search,
                                                              "_source": {"excludes": [field_name]}})
        hits = (result.get("hits") or {}).get("hits") or []
        if not hits:
            raise VerificationError(f"the {next(iter(search))} query with model {model_id} found nothing")
        tops = {"neural": hits[0]["_id"]}
        log.info("neural search check with model %s: top hit %s for %r", model_id, tops["neural"], query)
        if search_pipeline is not None:
            step = f"PUT /_search/pipeline/{pipeline}"
            api.call("PUT", f"/_search/pipeline/{pipeline}", body=search_pipeline)
            made_search_pipeline = True
            step = f"POST /{index}/_search?search_pipeline={pipeline}"
            hybrid = {"hybrid": {"queries": [{"match": {"text": {"query": query}}}, search]}}
            result = api.call("POST", f"/{index}/_search", params={"search_pipeline": pipeline},
                              body={"size": len(texts), "query": hybrid, "_source": {"excludes": [field_name]}})
            hits = (result.get("hits") or {}).get("hits") or []
            if not hits:
                raise VerificationError(f"the hybrid query through search pipeline {pipeline} found nothing")
            tops["hybrid"] = hits[0]["_id"]
            log.info("hybrid search check with model %s: top hit %s for %r", model_id, tops["hybrid"], query)
        return tops
    except os_errors.TransportError as exc:
        raise VerificationError(f"{step} failed: {describe_error(exc).rstrip('.')}.{setting_hint(error_text(exc))}") \
            from exc
    finally:
        if made_search_pipeline:
            with contextlib.suppress(os_errors.TransportError):
                api.call("DELETE", f"/_search/pipeline/{pipeline}")
        if made_index:
            with contextlib.suppress(os_errors.TransportError):
                api.call("DELETE", f"/{index}")
        if made_pipeline:
            with contextlib.suppress(os_errors.TransportError):
                api.call("DELETE", f"/_ingest/pipeline/{pipeline}")
