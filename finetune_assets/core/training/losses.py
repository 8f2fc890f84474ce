"""Training losses: in-batch ranking (MNRL) and distillation from cross-encoder teacher scores.

mnrl             MultipleNegativesRankingLoss: in-batch negatives plus the mined ones; no teacher needed.
margin_mse       MarginMSE (as GPL): student margin sim(q, pos) - sim(q, neg_i) regresses the teacher's margin.
distill_kl       KL divergence between the softmax of teacher and student scores over [pos, neg_1..neg_n].
mnrl+margin_mse  both on the same batch, summed: a loss may return a dict of parts, which the
                 sentence-transformers trainer adds up and logs separately.
batch_kl         KL divergence to the teacher over every document pooled in a batch, from mined_negatives'
                 teacher matrix (core/batch_distillation.py; its own training loop, dense and sparse).
Sparse models use the Sparse* equivalents inside SpladeLoss.
"""
from __future__ import annotations

from collections.abc import Sequence

LOSSES = ("mnrl", "margin_mse", "distill_kl", "mnrl+margin_mse", "batch_kl")
MATRIX_LOSSES = ("batch_kl",)  # read the teacher's top-K files (teacher_top_k.py), not per-row teacher columns


def check_loss(loss: str) -> None:
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; use one of {', '.join(LOSSES)}")


def needs_teacher(loss: str) -> bool:
    return loss != "mnrl"


def teacher_labels(rows: Sequence[dict], num_negatives: int, loss: str) -> list[list[float]] | None:
    """The label of each row for `loss`: n margins pos - neg_i (margin_mse), or the n + 1 scores [pos, negs]
    (distill_kl); None for mnrl. The columns come from mined_negatives with a teacher set."""
    check_loss(loss)
    if not needs_teacher(loss) or loss in MATRIX_LOSSES:
        return None
    if num_negatives < 1:
        raise ValueError(f"loss {loss!r} compares the positive with mined negatives: it needs num_negatives >= 1")
    keys = ["teacher_positive_score"] + [f"teacher_negative_{n}_score" for n in range(1, num_negatives + 1)]
    labels = []
    for line, row in enumerate(rows, start=1):
        missing = [k for k in keys if not isinstance(row.get(k), (int, float)) or isinstance(row.get(k), bool)]
        if missing:
            raise ValueError(f"training row {line} has no {', '.join(missing)}: loss {loss!r} needs teacher scores; "
                             "set mined_negatives teacher (e.g. 'default') and re-materialize mined_negatives")
        positive, *negatives = (float(row[k]) for k in keys)
        labels.append([positive - n for n in negatives] if "margin_mse" in loss else [positive, *negatives])
    return labels


def training_dataset(rows: Sequence[dict], columns: list[str], loss: str):
    """The trainer's dataset: exactly the text columns the loss reads, in order, then `label` if it has one."""
    from datasets import Dataset

    data = {c: [r[c] for r in rows] for c in columns}
    labels = teacher_labels(rows, len(columns) - 2, loss)
    if labels is not None:
        data["label"] = labels
    return Dataset.from_dict(data)


def scaled_cosine(a, b, scale: float = 20.0):
    from sentence_transformers.util import pairwise_cos_sim

    return pairwise_cos_sim(a, b) * scale


def student_similarity(model, cosine_scale: float):
    """The student's score in distillation losses. A cosine model's scores lie in [-1, 1] while teacher logits
    span about +-10, so they are scaled (as MNRL scales them by 20); dot-product models (SPLADE) are not."""
    from functools import partial

    from sentence_transformers.util import pairwise_dot_score

    if getattr(model, "similarity_fn_name", None) == "cosine":
        return partial(scaled_cosine, scale=cosine_scale)
    return pairwise_dot_score


def _loss_classes(sparse: bool) -> dict:
    if sparse:
        from sentence_transformers.sparse_encoder import losses as sparse_losses

        return {"mnrl": sparse_losses.SparseMultipleNegativesRankingLoss,
                "margin_mse": sparse_losses.SparseMarginMSELoss,
                "distill_kl": sparse_losses.SparseDistillKLDivLoss}
    from sentence_transformers.sentence_transformer import losses as dense_losses

    return {"mnrl": dense_losses.MultipleNegativesRankingLoss, "margin_mse": dense_losses.MarginMSELoss,
            "distill_kl": dense_losses.DistillKLDivLoss}


def ranking_loss(model, loss: str, *, cosine_scale: float = 20.0, sparse: bool = False):
    """The loss module for `loss`; for sparse models, the inner loss to wrap in SpladeLoss."""
    check_loss(loss)
    classes = _loss_classes(sparse)
    similarity = student_similarity(model, cosine_scale)
    parts = {name: classes[name](model) if name == "mnrl" else classes[name](model, similarity_fct=similarity)
             for name in loss.split("+")}
    return next(iter(parts.values())) if len(parts) == 1 else summed_loss(model, parts)


def summed_loss(model, parts: dict):
    """Several losses on one batch: embed the columns once, return each part's loss by name."""
    import torch
    from sentence_transformers.base.losses.merged_forward import embed_columns

    class SummedLoss(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.parts = torch.nn.ModuleDict(parts)

        def forward(self, sentence_features, labels):
            return self.compute_loss_from_embeddings(embed_columns(self.model, sentence_features), labels)

        def compute_loss_from_embeddings(self, embeddings, labels):
            return {name: part.compute_loss_from_embeddings(embeddings, labels) for name, part in self.parts.items()}

    return SummedLoss()
