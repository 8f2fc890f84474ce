"""Tokenize as ml-commons does: the package's tokenizer.json, one text at a time, truncated at max_seq_length.

`tokenizer.json` in the zip gets `truncation.max_length = max_seq_length` (and no padding), so a
long document is cut like sentence-transformers cuts it instead of overflowing the position
embeddings inside OpenSearch.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from finetune_assets.core.export.model_dir import transformer_dir
from finetune_assets.core.export.package import TOKENIZER_FILE, ExportError


def package_tokenizer_json(model, model_dir: Path, max_seq_length: int) -> str:
    """tokenizer.json for the zip: the model's own file with truncation at max_seq_length and no padding.

    The file on disk is kept byte-for-byte apart from those two keys (so the tokenizers build inside
    OpenSearch reads what the model was saved with); when the Transformer lowercases in Python
    (do_lower_case), or there is no file, the in-memory fast tokenizer is serialised instead.
    """
    from tokenizers import Tokenizer

    tokenizer = model.tokenizer
    source = transformer_dir(model_dir) / TOKENIZER_FILE
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


def encode_one(tokenizer, text: str) -> tuple[list[int], list[int], list[int]]:
    encoding = tokenizer.encode(text)
    return list(encoding.ids), list(encoding.attention_mask), list(encoding.type_ids)


def example_features(model, sample_sentences: Sequence[str]) -> dict:
    """Two texts of different lengths, padded: the trace then sees a real attention mask."""
    texts = [s for s in sample_sentences if s.strip()][:2]
    if len(texts) < 2:
        texts = list(texts) + ["a"]
    batch = model.tokenizer(texts, padding=True, truncation=True, max_length=model.max_seq_length, return_tensors="pt")
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
