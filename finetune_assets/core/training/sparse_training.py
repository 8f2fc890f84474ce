"""Fine-tune a SPLADE sparse encoder, or an inference-free one, on (query, positive[, negatives]) rows.

sparse          SpladeLoss around hp.loss (default SparseMultipleNegativesRankingLoss: in-batch plus mined
                negatives; or SparseMarginMSELoss / SparseDistillKLDivLoss on teacher scores), with
                FLOPS regularisers on queries and documents (their weights ramp up from 0 during training).
inference_free  the query side is a SparseStaticEmbedding (one weight per vocabulary token), initialised with
                IDF from the training documents; the document side is the SPLADE model. Only the document
                side gets a FLOPS regulariser, and the token weights learn at their own (higher) rate.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from finetune_assets.core.offline_models import resolve_model
from finetune_assets.core.training.dense_training import (
    Hyperparameters,
    TrainingOutcome,
    check_rows,
    loss_recorder,
    run_training,
    total_steps,
    trainer_arguments,
)
from finetune_assets.core.training.losses import ranking_loss, training_dataset

# Name of the query-side token weights inside the loss model (SpladeLoss.model -> Router -> query route).
QUERY_WEIGHT_PATTERN = r"sub_modules\.query\.0\.weight"


def idf_weights(texts: Iterable[str], tokenizer):
    """BM25 IDF per vocabulary token, log(1 + (N - df + 0.5) / (df + 0.5)), over the given documents.

    Texts are tokenized the way SparseStaticEmbedding tokenizes queries (no special tokens); special tokens
    get weight 0, since OpenSearch drops them from a query. A token no document holds gets the highest IDF.
    """
    import torch

    texts = list(texts)
    if not texts:
        raise ValueError("IDF needs at least one document")
    vocab_size = len(tokenizer.get_vocab())
    frequencies = torch.zeros(vocab_size, dtype=torch.float64)
    for start in range(0, len(texts), 256):
        encoded = tokenizer(texts[start:start + 256], add_special_tokens=False, truncation=False, verbose=False)
        for ids in encoded["input_ids"]:
            frequencies[torch.tensor(sorted(set(ids)), dtype=torch.long)] += 1
    total = len(texts)
    weights = torch.log1p((total - frequencies + 0.5) / (frequencies + 0.5))
    weights[list(set(tokenizer.all_special_ids))] = 0.0
    return weights.float()


def training_documents(rows: Sequence[dict]) -> list[str]:
    """The distinct document texts of training rows: positives and mined negatives."""
    seen: dict[str, None] = {}
    for row in rows:
        for key, value in row.items():
            if (key == "positive" or (key.startswith("negative_") and key[9:].isdigit())) and isinstance(value, str):
                seen.setdefault(value, None)
    return list(seen)


def inference_free_model(splade, documents: Sequence[str], *, frozen: bool = False):
    """A Router SparseEncoder: IDF token weights for queries, the given SPLADE model for documents."""
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import Router, SparseStaticEmbedding

    modules = list(splade)
    names = [type(m).__name__ for m in modules]
    if names != ["Transformer", "SpladePooling"]:
        raise ValueError(f"an inference-free model needs a plain SPLADE base (Transformer -> SpladePooling), "
                         f"got {names}")
    tokenizer = modules[0].tokenizer
    query = SparseStaticEmbedding(tokenizer=tokenizer, weight=idf_weights(documents, tokenizer), frozen=frozen)
    router = Router.for_query_document(query_modules=[query], document_modules=modules)
    return SparseEncoder(modules=[router], similarity_fn_name="dot", device=str(splade.device))


def load_splade(name_or_path: str, max_seq_length: int, device: str | None = None):
    from sentence_transformers import SparseEncoder

    model = SparseEncoder(resolve_model(name_or_path), device=device)
    model.max_seq_length = max_seq_length
    return model


def train_sparse(
    rows: Sequence[dict],
    hp: Hyperparameters,
    model_dir: str | Path,
    *,
    on_log: Callable[[dict], None] | None = None,
    work_dir: str | Path | None = None,
) -> TrainingOutcome:
    """Train a SPLADE (hp.model_type 'sparse') or inference-free SPLADE ('inference_free') model."""
    import torch
    from sentence_transformers import SparseEncoderTrainer, SparseEncoderTrainingArguments
    from sentence_transformers.sparse_encoder.losses import SpladeLoss

    if hp.model_type not in ("sparse", "inference_free"):
        raise ValueError(f"train_sparse trains sparse or inference_free models, not {hp.model_type!r}")
    columns = check_rows(rows, hp)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_splade(hp.base_model, hp.training_sequence_length, device)
    extra: dict = {}
    query_weight: float | None = hp.query_regularizer_weight
    if hp.model_type == "inference_free":
        model = inference_free_model(model, training_documents(rows))
        extra["router_mapping"] = {c: "query" if c == "query" else "document" for c in columns}
        extra["learning_rate_mapping"] = {QUERY_WEIGHT_PATTERN: hp.idf_learning_rate}
        query_weight = None  # static query weights: no query-side FLOPS term
    loss = SpladeLoss(model, ranking_loss(model, hp.loss, cosine_scale=hp.cosine_scale, sparse=True),
                      document_regularizer_weight=hp.document_regularizer_weight,
                      query_regularizer_weight=query_weight)
    dataset = training_dataset(rows, columns, hp.loss)
    steps = total_steps(rows, hp)
    history: list[dict] = []
    output_dir = str(work_dir or Path(model_dir) / "_checkpoints")
    args = SparseEncoderTrainingArguments(**trainer_arguments(hp, steps, output_dir), **extra)
    trainer = SparseEncoderTrainer(model=model, args=args, train_dataset=dataset, loss=loss,
                                   callbacks=[loss_recorder(history, steps, on_log)])
    return run_training(trainer, model, rows, hp, model_dir, history, device)


def flops_weight_note(hp: Hyperparameters) -> str:
    """One line for logs: which regularisers run, with what final weight."""
    query = "none" if hp.model_type == "inference_free" else f"{hp.query_regularizer_weight:g}"
    return f"FLOPS regularisers: query {query}, document {hp.document_regularizer_weight:g}"

