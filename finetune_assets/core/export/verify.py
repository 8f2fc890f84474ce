"""Check that a packaged model reproduces the original model's embeddings on probe texts.

Every export verifies itself: the packaged model is loaded back, sample texts (plus one text far
longer than max_seq_length) go through the packaged `tokenizer.json` one at a time, the way
ml-commons does it, and the result is compared with the original model's own embeddings.
A cosine below `min_cosine` (0.999) raises `ExportError`.
"""
from __future__ import annotations

from typing import Sequence

from finetune_assets.core.export.package import ExportError

DEFAULT_MIN_COSINE = 0.999
DEFAULT_SAMPLE_SENTENCES = (
    "How do I register a fine-tuned embedding model in OpenSearch?",
    "The quick brown fox jumps over the lazy dog.",
)


def probe_texts(sample_sentences: Sequence[str], max_seq_length: int) -> list[str]:
    samples = [s for s in sample_sentences if isinstance(s, str) and s.strip()]
    if not samples:
        raise ExportError("sample_sentences must hold at least one non-empty text")
    words = " ".join(samples).split()
    long_text = " ".join(words[i % len(words)] for i in range(2 * max_seq_length + 64))
    return samples + [long_text]


def compare_outputs(produced, reference, texts, tokenizer_json, hf_tokenizer, max_seq_length, min_cosine) -> dict:
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


def top_tokens(weights, tokenizer_json: str, k: int) -> dict[str, float]:
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
