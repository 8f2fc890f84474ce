"""Package an inference-free sparse model for OpenSearch: SPARSE_ENCODING for documents, SPARSE_TOKENIZE for queries.

What ml-commons does with a SPARSE_TOKENIZE model (SparseTokenizerModel, the function behind OpenSearch's
opensearch-neural-sparse-tokenizer-* and the query side of the opensearch-neural-sparse-encoding-doc-* models):

* the zip holds `tokenizer.json` and `idf.json` at its root, no model file; it is registered with
  `function_name: SPARSE_TOKENIZE`, `model_format: TORCH_SCRIPT` and no `model_config`;
* `idf.json` is one JSON object, token string -> weight (float), as the doc-* models ship it;
* a query is tokenized with `tokenizer.json` (special tokens added), each distinct id is decoded on its
  own with special tokens skipped, empty strings are dropped, and each token gets `idf.get(token, 1.0)`.

So every token whose weight is not 1.0 must be in idf.json: all non-special vocabulary tokens are written.
The self-check replays that algorithm on the packaged files for sample queries (one far longer than the
tokenizer's limit, one with an unknown character) and requires it to reproduce the model's own query
vectors (`encode_query`, special tokens dropped as ml-commons drops them).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from finetune_assets.core.export.model_dir import check_model_dir, load_model
from finetune_assets.core.export.package import (
    TOKENIZER_FILE,
    ExportedPackage,
    ExportError,
    safe_stem,
    write_package,
)
from finetune_assets.core.export.sparse import export_sparse_model
from finetune_assets.core.export.verify import DEFAULT_SAMPLE_SENTENCES, probe_texts

IDF_FILE = "idf.json"
DOCUMENT_PACKAGE_DIR = "document"  # SPARSE_ENCODING package of an inference-free model
QUERY_PACKAGE_DIR = "query"  # SPARSE_TOKENIZE package of an inference-free model
MAX_WEIGHT_DIFF = 1e-5
UNKNOWN_CHARACTER_PROBE = "naïve café ☃ query"  # ☃ is [UNK] for BERT vocabularies: ml-commons drops it


@dataclass(frozen=True)
class InferenceFreePackages:
    document: ExportedPackage
    query: ExportedPackage


def export_inference_free_model(
    model_dir: str | Path,
    out_dir: str | Path,
    name: str | None = None,
    version: str = "1.0.0",
    description: str | None = None,
    model_group_id: str | None = None,
) -> InferenceFreePackages:
    """Both packages of an inference-free SparseEncoder: `out_dir/document` and `out_dir/query`."""
    out_dir = Path(out_dir)
    name = name or Path(model_dir).name
    document = export_sparse_model(
        model_dir, out_dir / DOCUMENT_PACKAGE_DIR, name=name, version=version, model_group_id=model_group_id,
        description=description and f"{description} (document encoder)")
    query = export_sparse_tokenizer(
        model_dir, out_dir / QUERY_PACKAGE_DIR, name=f"{name}-query-tokenizer", version=version,
        model_group_id=model_group_id, description=description and f"{description} (query tokenizer, IDF weights)")
    return InferenceFreePackages(document=document, query=query)


def export_sparse_tokenizer(
    model_dir: str | Path,
    out_dir: str | Path,
    name: str | None = None,
    version: str = "1.0.0",
    description: str | None = None,
    model_group_id: str | None = None,
    sample_sentences: Sequence[str] = DEFAULT_SAMPLE_SENTENCES,
) -> ExportedPackage:
    """Export the query side (a SparseStaticEmbedding) of an inference-free model as a SPARSE_TOKENIZE package."""
    started = time.perf_counter()
    model_dir = check_model_dir(model_dir)
    model = load_model(model_dir, sparse=True)
    static = _query_embedding(model, model_dir)
    tokenizer = static.tokenizer
    if not getattr(tokenizer, "is_fast", False):
        raise ExportError(f"{model_dir}: the query tokenizer has no tokenizer.json (not a fast tokenizer)")
    max_length = _content_limit(tokenizer)
    tokenizer_json = _tokenizer_json(tokenizer, max_length)
    weights = static.weight.detach().float().cpu()
    idf = idf_table(tokenizer_json, weights.tolist())
    warnings = []
    negative = sum(1 for value in idf.values() if value < 0)
    if negative:
        warnings.append(f"{negative} tokens have negative weights; OpenSearch rank features need positive "
                        "values, so those query tokens may be rejected or ignored")
    special = sorted(set(int(i) for i in tokenizer.all_special_ids))
    if any(float(weights[i]) != 0 for i in special):
        warnings.append("special tokens have non-zero weights in the model; ml-commons drops them from queries")

    probes = probe_texts([*sample_sentences, UNKNOWN_CHARACTER_PROBE], max_length or 512)
    reference = model.encode_query(probes, convert_to_tensor=True, show_progress_bar=False)
    reference = (reference.to_dense() if reference.is_sparse else reference).float().cpu()
    reference[:, special] = 0
    verification = _verify(tokenizer_json, idf, probes, reference)

    name = name or f"{model_dir.name}-query-tokenizer"
    file_stem = safe_stem(name)
    description = description or (
        f"Query tokenizer of an inference-free sparse model: token weights (IDF) over a {len(weights)}-token "
        "vocabulary, no model inference at query time.")
    return write_package(
        out_dir=Path(out_dir),
        kind="sparse_tokenize",
        model_dir=model_dir,
        zip_name=f"{file_stem}-{version}-sparse_tokenize.zip",
        entries={TOKENIZER_FILE: tokenizer_json.encode("utf-8"),
                 IDF_FILE: json.dumps(idf, ensure_ascii=False).encode("utf-8")},
        name=name,
        version=version,
        description=description,
        model_group_id=model_group_id,
        model_format="TORCH_SCRIPT",
        function_name="SPARSE_TOKENIZE",
        model_config=None,
        embedding_dimension=len(weights),
        max_seq_length=max_length or 0,
        extra_manifest={"idf_tokens": len(idf), "special_token_ids": special},
        verification=verification,
        warnings=warnings,
        started=started,
    )


def _query_embedding(model, model_dir: Path):
    modules = list(model)
    if len(modules) == 1 and type(modules[0]).__name__ == "Router":
        route = list(modules[0].sub_modules["query"])
        if [type(m).__name__ for m in route] == ["SparseStaticEmbedding"]:
            return route[0]
        modules = route
    raise ExportError(f"{model_dir} is not an inference-free model: SPARSE_TOKENIZE needs a Router whose query route "
                      f"is one SparseStaticEmbedding, found {[type(m).__name__ for m in modules]}")


def _content_limit(tokenizer) -> int | None:
    """Content tokens SparseStaticEmbedding keeps (tokenizer.model_max_length, no special tokens); None = no limit."""
    limit = getattr(tokenizer, "model_max_length", None)
    return int(limit) if isinstance(limit, int) and 0 < limit < 1_000_000 else None


def _tokenizer_json(tokenizer, content_limit: int | None) -> str:
    """The query tokenizer as tokenizer.json, truncating where the model does.

    ml-commons encodes with special tokens, the model without; the limit grows by the number of special
    tokens the tokenizer adds, so both keep the same content tokens.
    """
    from tokenizers import Tokenizer

    data = json.loads(tokenizer.backend_tokenizer.to_str())
    data["padding"] = None
    data["truncation"] = None
    if content_limit:
        probe = Tokenizer.from_str(json.dumps(data))
        added = len(probe.encode("a").ids) - len(probe.encode("a", add_special_tokens=False).ids)
        data["truncation"] = {"direction": "Right", "max_length": content_limit + added, "strategy": "LongestFirst",
                              "stride": 0}
    return json.dumps(data, ensure_ascii=False)


def idf_table(tokenizer_json: str, weights: Sequence[float]) -> dict[str, float]:
    """token -> weight for every id that ml-commons can produce: the id decoded alone, special tokens skipped.

    Two ids decoding to one string would make ml-commons fail (duplicate map key), so that is an error here.
    """
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(tokenizer_json)
    if tokenizer.get_vocab_size() != len(weights):
        raise ExportError(f"the tokenizer has {tokenizer.get_vocab_size()} tokens but the model {len(weights)} weights")
    table: dict[str, float] = {}
    owner: dict[str, int] = {}
    for token_id, weight in enumerate(weights):
        token = tokenizer.decode([token_id], skip_special_tokens=True)
        if not token:
            continue
        if token in owner:
            raise ExportError(f"token ids {owner[token]} and {token_id} both decode to {token!r}; ml-commons "
                              "cannot tell them apart in idf.json")
        owner[token] = token_id
        table[token] = float(weight)
    return table


def sparse_tokenize(tokenizer_json: str, idf: dict[str, float], text: str) -> dict[str, float]:
    """What ml-commons' SparseTokenizerModel returns for one text."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(tokenizer_json)
    result: dict[str, float] = {}
    for token_id in dict.fromkeys(tokenizer.encode(text).ids):
        token = tokenizer.decode([token_id], skip_special_tokens=True)
        if token:
            if token in result:
                raise ExportError(f"two ids of {text!r} decode to {token!r}: ml-commons fails on duplicate keys")
            result[token] = idf.get(token, 1.0)
    return result


def _verify(tokenizer_json: str, idf: dict[str, float], texts: list[str], reference) -> dict:
    """Compare the replayed ml-commons output with the model's query vectors, token by token."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(tokenizer_json)
    worst, cosines, token_counts = 0.0, [], []
    for row, text in enumerate(texts):
        produced = {k: v for k, v in sparse_tokenize(tokenizer_json, idf, text).items() if v != 0}
        vector = reference[row]
        expected = {tokenizer.decode([int(i)], skip_special_tokens=True): float(vector[i])
                    for i in vector.nonzero().flatten().tolist()}
        missing = sorted(set(expected) ^ set(produced))
        if missing:
            raise ExportError(f"SPARSE_TOKENIZE package and model disagree on the tokens of probe {row}: "
                              f"{missing[:10]} (text {text[:60]!r})")
        diff = max((abs(produced[t] - expected[t]) for t in expected), default=0.0)
        if diff > MAX_WEIGHT_DIFF:
            raise ExportError(f"idf.json weights differ from the model's query weights by {diff:.2e} on probe {row}")
        worst = max(worst, diff)
        dot = sum(produced[t] * expected[t] for t in expected)
        norm = (sum(v * v for v in produced.values()) * sum(v * v for v in expected.values())) ** 0.5
        cosines.append(dot / norm if norm else 1.0)
        token_counts.append(len(tokenizer.encode(text).ids))
    return {"texts": len(texts), "cosines": [round(c, 6) for c in cosines], "min_cosine": min(cosines),
            "max_abs_diff": worst, "token_counts": token_counts, "threshold": MAX_WEIGHT_DIFF}
