"""The base model's document embeddings, saved by the stage that computed them for the next one to reuse.

mined_negatives encodes the training documents with the dense base model for its teacher; evaluation_report
ranks the whole sample with the same model. Reusing the saved rows leaves only the held-out documents to encode.
A row is reused only when the model, its token limit and the document's text all match what was saved.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from finetune_assets.core.jsonl import read_jsonl

EMBEDDINGS_FILE = "base_document_embeddings.npy"  # float32 [documents, dimension], rows in the documents file's order
EMBEDDINGS_INFO_FILE = "base_document_embeddings.json"  # the model and token limit that wrote them


def model_identity(model_name: str, max_seq_length: int) -> dict:
    """What must match for a saved embedding to equal a fresh one (encode always normalises dense vectors)."""
    return {"model": model_name, "max_seq_length": int(max_seq_length)}


def save_embeddings(folder: Path, vectors: np.ndarray, identity: dict) -> None:
    """Save the rows of `vectors` (aligned with the folder's documents file) and the identity that made them."""
    np.save(folder / EMBEDDINGS_FILE, np.asarray(vectors, dtype=np.float32))
    (folder / EMBEDDINGS_INFO_FILE).write_text(json.dumps(identity) + "\n", encoding="utf-8")


def embeddings_reusing_saved(folder: Path, documents_file: str, identity: dict, doc_ids: Sequence[str],
                             doc_texts: Sequence[str],
                             encode: Callable[[list[str]], np.ndarray]) -> tuple[np.ndarray, int] | None:
    """Embeddings of `doc_texts`: each saved row whose id and text match, the rest through `encode`; and how many
    rows were reused. None when nothing was saved in `folder` or it was saved for another model or token limit."""
    embeddings_path, info_path = folder / EMBEDDINGS_FILE, folder / EMBEDDINGS_INFO_FILE
    if not (embeddings_path.is_file() and info_path.is_file() and (folder / documents_file).is_file()):
        return None
    info = json.loads(info_path.read_text(encoding="utf-8"))
    if any(info.get(key) != value for key, value in identity.items()):
        return None
    saved = np.load(embeddings_path, mmap_mode="r")
    known = {d["id"]: (row, d["text"]) for row, d in enumerate(read_jsonl(folder / documents_file))}
    if saved.ndim != 2 or saved.shape[0] != len(known):
        raise ValueError(f"{embeddings_path} has shape {saved.shape} but {folder / documents_file} lists "
                         f"{len(known)} documents: the folder is incomplete; materialize mined_negatives again")
    # the saved row of each document whose text is unchanged, else None
    rows = [row if text == wanted else None
            for (row, text), wanted in zip((known.get(doc_id, (None, None)) for doc_id in doc_ids), doc_texts)]
    reused = [i for i, row in enumerate(rows) if row is not None]
    missing = [i for i, row in enumerate(rows) if row is None]
    out = np.empty((len(doc_ids), saved.shape[1]), dtype=np.float32)
    if reused:
        out[reused] = saved[[rows[i] for i in reused]]
    if missing:
        fresh = np.asarray(encode([doc_texts[i] for i in missing]), dtype=np.float32)
        if fresh.shape != (len(missing), saved.shape[1]):
            raise ValueError(f"the model encodes {fresh.shape[1:]} vectors but {embeddings_path} holds "
                             f"{saved.shape[1]}-dimensional ones")
        out[missing] = fresh
    return out, len(reused)
