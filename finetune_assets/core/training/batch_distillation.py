"""Batch distillation: the student learns the teacher's ranking over every document in a training batch.

Each training query brings its teacher's top `candidates_per_query` documents; the batch's documents are pooled,
and for every query the student's softmax over the whole pool is pulled towards the teacher's (KL divergence).
Every document encoded serves every query of the batch, so a step teaches far more rankings per CPU-second than
one positive and a few negatives per query, and no candidate is ever called a negative: a document the teacher
likes stays liked (no false-negative guard needed).

The teacher's scores come from mined_negatives as each training row's top documents with their scores
(teacher_top_k.py: memory-mapped, linear in rows), so they are computed once; a document a row did not keep
reads with the expected softmax weight of the row's scores not kept. A row marked `exclude_source` (a span query
copied from its
document) has its source masked out for teacher and student alike.
"""
from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from finetune_assets.core.offline_models import resolve_base_model
from finetune_assets.core.retrieval.splade_pooling import splade_embeddings
from finetune_assets.core.teachers.teacher_top_k import SCORES_FILE, TEACHER_TOP_K, TeacherTopK
from finetune_assets.core.training.data_parallel import join_workers
from finetune_assets.core.training.dense_training import Hyperparameters, TrainingOutcome, total_steps

DOCUMENTS_FILE = "documents.jsonl"  # {"id", "text"} per document the teacher's indices point at

# The model types batch_kl trains (inference_free keeps fixed IDF query weights that a pooled batch cannot train).
MODEL_TYPES = ("dense", "sparse")
# A batch's pooled documents are encoded shortest first in chunks of this many, each padded only to its own
# longest text: one long document no longer pads a hundred short ones (CACM's median is 28 tokens). Chunks also
# keep activations cache-sized: a MiniLM bf16 step over 128 documents of 256 tokens took 23.4 s in one batch and
# 12.1 s as four chunks of 32 (16 or 64 a chunk: 15 s) on this 2-core Xeon.
ENCODE_CHUNK = 32
# A dense training step's pool goes in smaller chunks, each padded to its longest document: with bge-small-en in fp32,
# 8 a chunk took 0.45 (CACM) and 0.68 (Cranfield) of the time of 32 for 64 pooled documents, the embeddings equal to
# 1e-7 (benchmarks/pool_chunks.py, benchmarks/results/pool-chunks-2026-12-07/). Sparse steps, not measured, keep 32.
POOL_CHUNK = 8


def masks_its_source(row: dict) -> bool:
    """A span query, or a title query (title_queries): copied from its document, whose text the teacher reads
    with the title, so its source is a lexical certainty; masked, the row teaches the ranking of the others."""
    return bool(row.get("exclude_source")) or row.get("query_type") == "title"


def teacher_top_k(teacher, rows: Sequence[dict], doc_ids: Sequence[str], *, folder: str | Path | None = None,
                  k: int = TEACHER_TOP_K, on_progress: Callable[[int, int], None] | None = None) -> TeacherTopK:
    """Each row's top k documents and scores from a bound hybrid teacher (its `top_k`), the source of a span or
    title row (masks_its_source) kept as -inf; written as memory-mapped files to `folder` when given."""
    column = {doc_id: i for i, doc_id in enumerate(doc_ids)}
    masked = []
    for line, row in enumerate(rows, start=1):
        if not masks_its_source(row):
            masked.append(None)
        elif row.get("doc_id") not in column:
            raise ValueError(f"training row {line} (query {row.get('query')!r}) masks its source "
                             f"{row.get('doc_id')!r}, which is not among the teacher's documents")
        else:
            masked.append(column[row["doc_id"]])
    return teacher.top_k(masked, k=k, folder=folder, on_progress=on_progress)


def top_candidates(store: TeacherTopK, k: int) -> list[np.ndarray]:
    """Each row's k best-scored documents (masked ones never), best first."""
    return [store.candidates(row, k) for row in range(store.rows)]


def student_candidates(embed, queries: Sequence[str], texts: Sequence[str], lengths: Sequence[int],
                       store: TeacherTopK, k: int) -> np.ndarray:
    """Each row's k best documents by the student's own scores (documents the teacher masks never), best first.

    Pooled beside the teacher's candidates, they bring the documents the student ranks high and the teacher does
    not: its own mistakes, which the teacher's top documents alone would never show it (ANCE-style negatives).
    Vocabulary-sized (sparse model) document vectors are kept as a torch sparse matrix."""
    import torch

    chunks = length_sorted_chunks(range(len(texts)), lengths)
    with torch.no_grad():
        encoded = [embed([texts[c] for c in chunk]).float() for chunk in chunks]
        vocabulary = encoded[0].shape[1] > 4096  # a SPLADE vector: keep only its active terms
        if vocabulary:
            encoded = [vectors.to_sparse() for vectors in encoded]
        docs = torch.cat(encoded)
        position = torch.empty(len(texts), dtype=torch.long)
        position[torch.tensor([c for chunk in chunks for c in chunk])] = torch.arange(len(texts))
        best = np.empty((len(queries), min(k, len(texts))), dtype=np.int64)
        for start in range(0, len(queries), ENCODE_CHUNK):
            stop = min(start + ENCODE_CHUNK, len(queries))
            query_vectors = embed(list(queries[start:stop])).float()
            # Scored in float32 outside the caller's autocast, so the document matrix is not re-cast every chunk.
            with torch.autocast(docs.device.type, enabled=False):
                scored = torch.sparse.mm(docs, query_vectors.T).T if vocabulary else query_vectors @ docs.T
                student = scored[:, position.to(scored.device)].cpu().numpy()
            for i, row in enumerate(range(start, stop)):
                student[i, store.masked(row)] = -np.inf
            part = np.argsort(-student, axis=1, kind="stable")[:, :best.shape[1]]
            best[start:stop] = part
    return best


def length_sorted_chunks(pool: Sequence[int], lengths: Sequence[int], chunk: int = ENCODE_CHUNK) -> list[list[int]]:
    """The pool's documents ordered by token length (ties by index, so runs repeat) and cut into chunks of
    `chunk`; their concatenation is the order the pool's scores must follow."""
    ordered = sorted(pool, key=lambda c: (lengths[c], c))
    return [ordered[i:i + chunk] for i in range(0, len(ordered), chunk)]


def token_lengths(tokenizer, texts: Sequence[str], max_length: int) -> list[int]:
    """Tokens per text (special tokens included) after truncation to max_length."""
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    return [len(ids) for ids in encoded]


def check_inputs(rows: Sequence[dict], documents: Sequence[dict], scores: TeacherTopK, hp: Hyperparameters) -> None:
    if scores.rows != len(rows) or scores.documents != len(documents):
        raise ValueError(f"{SCORES_FILE} has {scores.rows} rows over {scores.documents} documents but there are "
                         f"{len(rows)} training rows and {len(documents)} documents: re-materialize mined_negatives")
    if len(rows) < 2:
        raise ValueError(f"batch distillation needs at least 2 training queries, got {len(rows)}")
    # Hyperparameters checked every range when it was built; what remains depends on the model type.
    if hp.output_bias_learning_rate and hp.model_type != "sparse":
        raise ValueError("output_bias_learning_rate applies to sparse models (the bias of the MLM head over the "
                         f"vocabulary); a {hp.model_type} model has no such head: leave it unset")
    if hp.untie_output_embeddings and hp.model_type != "sparse":
        raise ValueError("untie_output_embeddings applies to sparse models (the MLM head that writes vocabulary "
                         f"weights); a {hp.model_type} model has no such head: leave it false")
    for line, row in enumerate(rows, start=1):
        if not isinstance(row.get("query"), str) or not row["query"].strip():
            raise ValueError(f"training row {line} has no query")
    empty = [row + 1 for row in range(scores.rows) if not len(scores.candidates(row, 1))]
    if empty:
        raise ValueError(f"training row {empty[0]} has no scored document among the teacher's top documents "
                         f"({len(empty)} such rows)")


def batch_kl_loss(student, teacher, *, temperature: float = 1.0):
    """KL(teacher || student) per query over the pooled documents, averaged over queries; -inf teacher cells are
    masked for both. student: [queries, pool] scores; teacher: float [queries, pool] scores."""
    import torch

    mask = torch.isinf(teacher)
    target = torch.log_softmax(teacher.masked_fill(mask, -1e4) / temperature, dim=-1)
    predicted = torch.log_softmax(student.masked_fill(mask, -1e4), dim=-1)
    return torch.nn.functional.kl_div(predicted, target, log_target=True, reduction="batchmean")


def spread_ratio(student, teacher, teacher_variance=None) -> float:
    """The teacher's mean per-query standard deviation over the student's, on the entries the teacher scores
    (finite): the factor that puts the student's scores on the teacher's scale. `teacher_variance` (same shape)
    adds the spread a cell stands for (a document the row did not keep stands for those it left out,
    whose variance it carries), so the teacher's spread is the one its full scores have."""
    import torch

    finite = torch.isfinite(teacher)
    count = finite.sum(dim=1).clamp(min=2)

    def row_std(scores, extra=None):
        scores = torch.where(finite, scores, torch.zeros_like(scores))
        mean = scores.sum(dim=1) / count
        deviation = torch.where(finite, scores - mean[:, None], torch.zeros_like(scores))
        squares = (deviation ** 2).sum(dim=1)
        if extra is not None:
            squares = squares + torch.where(finite, extra, torch.zeros_like(extra)).sum(dim=1)
        return (squares / (count - 1)).sqrt().mean()

    student_std = float(row_std(student.detach().float()))
    if student_std <= 0:
        return 1.0
    extra = teacher_variance.float() if teacher_variance is not None else None
    return float(row_std(teacher.float(), extra)) / student_std


def cpu_has_bf16() -> bool:
    """bf16 matrix units (AVX-512 BF16 or AMX): autocast then trains about 1.9x faster on a Xeon with AMX and 1.7x
    on an AMD EPYC with AVX-512 BF16 alone (benchmarks/precision_step.py); on AVX2-only CPUs bf16 is emulated and
    many times slower than fp32."""
    import torch

    return bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
                or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


def training_precision(setting: str, device: str) -> str:
    """bf16 autocast (fp32 weights) where the hardware runs it natively, else fp32; fp16 is not used here."""
    import torch

    if setting not in ("auto", "bf16", "fp32", "fp16"):
        raise ValueError(f"unknown precision {setting!r}; use auto, bf16, fp16 or fp32")
    if setting == "fp32":
        return "fp32"
    native = torch.cuda.is_bf16_supported() if device == "cuda" else cpu_has_bf16()
    return "bf16" if native or setting == "bf16" else "fp32"


def _load_student(hp: Hyperparameters, device: str):
    if hp.model_type == "dense":
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(resolve_base_model(hp.base_model), device=device)
    if hp.model_type == "sparse":
        from finetune_assets.core.training.sparse_training import load_splade

        return load_splade(hp.base_model, hp.max_seq_length, device)
    raise ValueError("loss 'batch_kl' trains dense and sparse models; inference_free keeps fixed query weights "
                     "that a batch of pooled documents does not train: use its SpladeLoss losses")


def enable_gradient_checkpointing(model) -> int:
    """Turn on activation recomputation in every Hugging Face model inside `model` (non-reentrant, so dropout
    replays the same masks and the gradients are the ones kept activations give); returns how many."""
    from transformers import PreTrainedModel

    enabled = 0
    for found in model.modules():  # outermost first: enabling a model covers the models inside it
        if (isinstance(found, PreTrainedModel) and found.supports_gradient_checkpointing
                and not found.is_gradient_checkpointing):
            found.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            enabled += 1
    if not enabled:
        raise ValueError(f"gradient_checkpointing: {type(model).__name__} holds no Hugging Face model that supports "
                         "it; leave it false")
    return enabled


def set_dropout(model, probability: float) -> int:
    """Every dropout layer of `model` (attention probabilities included: BERT reads the layer's p) to
    `probability`; returns how many layers changed. Inference never drops anything, so the saved model is the same."""
    import torch

    layers = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    for layer in layers:
        layer.p = probability
    return len(layers)


def set_attention_dropout(model, probability: float) -> int:
    """The dropout on attention probabilities of every attention layer of `model` to `probability`; returns how many
    layers changed. At 0, PyTorch's fused attention runs without storing each head's attention matrix."""
    import torch

    # BERT's self-attention (MiniLM, BGE, GTE, SPLADE) holds its own Dropout, whose p the attention call reads.
    layers = [m.dropout for m in model.modules()
              if "SelfAttention" in type(m).__name__ and isinstance(getattr(m, "dropout", None), torch.nn.Dropout)]
    for layer in layers:
        layer.p = probability
    return len(layers)


def freeze_lower_layers(model, blocks: int) -> int:
    """Keep the `blocks` lowest blocks of a BERT-style encoder at their weights, counting the embedding layer as the
    first and each transformer layer after it (as Hugging Face counts hidden states); returns how many parameters
    stopped training. A SPLADE model's vocabulary projection is tied to its word embeddings and stays with them."""
    auto_model = model[0].auto_model
    encoder = getattr(auto_model, auto_model.base_model_prefix, auto_model)
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    if getattr(encoder, "embeddings", None) is None or layers is None:
        raise ValueError(f"frozen_layers: {type(auto_model).__name__} has no BERT-style embeddings and encoder "
                         "layers to freeze; leave it 0")
    if blocks > len(layers):  # at least the top layer and the pooling must train
        raise ValueError(f"frozen_layers is {blocks}, but this model has the embedding layer and {len(layers)} "
                         f"transformer layers, of which at least one must train: use at most {len(layers)}")
    frozen = [p for block in [encoder.embeddings, *layers][:blocks] for p in block.parameters()]
    for parameter in frozen:
        parameter.requires_grad_(False)
    return sum(p.numel() for p in frozen)


def untie_output_embeddings(model) -> None:
    """Give a SPLADE model's MLM head its own copy of the word embeddings and mark the config untied, so
    save_pretrained writes both and loading keeps them apart."""
    import torch

    auto_model = model[0].auto_model
    head = auto_model.get_output_embeddings()
    if head is None or head.weight is not auto_model.get_input_embeddings().weight:
        raise ValueError("untie_output_embeddings: this model's output projection is not tied to its word "
                         "embeddings, so there is nothing to untie: leave it false")
    head.weight = torch.nn.Parameter(head.weight.detach().clone())
    auto_model.config.tie_word_embeddings = False


def give_the_head_its_own_bias(model) -> None:
    """Before saving an untied model: BERT's head bias is one tensor under two names (decoder.bias and
    predictions.bias), which save_pretrained writes once, and an untied config loads only the other name (the
    decoder's bias came back as zeros). Two equal copies are both written and load back."""
    import torch

    head = model[0].auto_model.get_output_embeddings()
    if head.bias is not None:
        head.bias = torch.nn.Parameter(head.bias.detach().clone())


class TailAverage:
    """Running mean of the trainable weights over the steps from `start` on: Polyak averaging of one run's late
    checkpoints, a soup that costs no extra training (a soup of seeds trains every member)."""

    def __init__(self, model, start: int) -> None:
        self.model, self.start, self.count = model, start, 0
        self.mean: dict[str, object] = {}

    def update(self, step: int) -> None:
        if step < self.start:
            return
        self.count += 1
        for name, parameter in self.model.named_parameters():
            value = parameter.detach().float()
            if name not in self.mean:
                self.mean[name] = value.clone()
            else:
                self.mean[name] += (value - self.mean[name]) / self.count

    def apply(self) -> None:
        """Write the mean into the model (no-op before the first averaged step)."""
        import torch

        with torch.no_grad():
            for name, parameter in self.model.named_parameters():
                if name in self.mean:
                    parameter.copy_(self.mean[name].to(parameter.dtype))


def parameter_groups(model, hp: Hyperparameters) -> list[dict]:
    """AdamW groups: everything at hp.learning_rate, except a sparse model's per-token output bias when
    hp.output_bias_learning_rate is set (its own rate, no weight decay: a bias that decays towards 0 would pull
    every term's weight back to the pretrained vocabulary's)."""
    everything = {"params": [p for p in model.parameters() if p.requires_grad], "lr": hp.learning_rate,
                  "weight_decay": 0.01}
    if not hp.output_bias_learning_rate:
        return [everything]
    head = model[0].auto_model.get_output_embeddings()
    bias = getattr(head, "bias", None)
    if bias is None:
        raise ValueError(f"{hp.base_model} has no output bias over its vocabulary to give its own learning rate: "
                         "leave output_bias_learning_rate unset")
    everything["params"] = [p for p in everything["params"] if p is not bias]
    return [everything, {"params": [bias], "lr": hp.output_bias_learning_rate, "weight_decay": 0.0}]


def _flops(embeddings):
    # FLOPS regulariser (SPLADE): squared mean activation per vocabulary entry, summed.
    return (embeddings.abs().mean(dim=0) ** 2).sum()


def train_batch_kl(rows: Sequence[dict], documents: Sequence[dict], scores: TeacherTopK, hp: Hyperparameters,
                   model_dir: str | Path, *, on_log: Callable[[dict], None] | None = None) -> TrainingOutcome:
    """Distil the teacher's top documents per row into the base model (dense: scaled cosine; sparse: dot product
    with FLOPS regularisers), batch by batch, and save the model to `model_dir`."""
    check_inputs(rows, documents, scores, hp)
    import torch
    from sentence_transformers.util import batch_to_device
    from tqdm.auto import tqdm

    cuda = torch.cuda.is_available()
    workers = join_workers(cuda)  # one process, or each of torchrun's processes on its own batches
    batch = min(hp.batch_size, len(rows) // workers.world_size)  # per process
    if batch < 1:
        raise ValueError(f"{len(rows)} training rows cannot give each of {workers.world_size} processes a batch: "
                         "start fewer processes or add training rows")
    torch.manual_seed(hp.seed + workers.rank)  # the same weights everywhere (broadcast below), other dropout masks
    device, device_type = workers.device(cuda), "cuda" if cuda else "cpu"
    model = _load_student(hp, device)
    if hp.untie_output_embeddings:
        untie_output_embeddings(model)
    if hp.dropout is not None:
        set_dropout(model, hp.dropout)
    if hp.attention_dropout is not None:
        set_attention_dropout(model, hp.attention_dropout)
    if hp.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if hp.frozen_layers:
        freeze_lower_layers(model, hp.frozen_layers)
    model.max_seq_length = hp.training_sequence_length
    sparse = hp.model_type != "dense"
    workers.broadcast_parameters(model)
    candidates = top_candidates(scores, hp.candidates_per_query)
    texts = [d["text"] for d in documents]
    lengths = token_lengths(model.tokenizer, texts, hp.training_sequence_length)
    steps = total_steps(rows, replace(hp, batch_size=batch * workers.world_size))
    # log of a learned factor on the student's scores (stays 0 without score_scale_learning_rate)
    log_factor = torch.nn.Parameter(torch.zeros((), device=device))
    groups = parameter_groups(model, hp)
    if hp.score_scale_learning_rate:
        groups.append({"params": [log_factor], "lr": hp.score_scale_learning_rate, "weight_decay": 0.0})
    optimizer = torch.optim.AdamW(groups)
    warmup = max(1, int(hp.warmup_ratio * steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup))))
    precision = training_precision(hp.precision, device_type)
    autocast = torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16")
    order_rng = random.Random(hp.seed)
    average = TailAverage(model, int(hp.average_weights_from * steps)) if hp.average_weights_from else None

    def embed(batch_texts: list[str]):
        features = batch_to_device(model.preprocess(batch_texts), device)
        if sparse:
            return splade_embeddings(model, features)
        return torch.nn.functional.normalize(model(features)["sentence_embedding"], dim=-1)

    def batches():  # every process draws the same order and takes its own part of each step's rows
        step_rows = batch * workers.world_size
        while True:
            order = list(range(len(rows)))
            order_rng.shuffle(order)
            for start in range(0, len(order) - step_rows + 1, step_rows):
                yield order[start + workers.rank * batch:start + (workers.rank + 1) * batch]

    mining_seconds = 0.0  # logged with the next history entry

    def mine_own_candidates():
        nonlocal mining_seconds
        began = time.perf_counter()
        model.eval()  # no dropout: rank as the saved model would
        found = student_candidates(embed, [r["query"] for r in rows], texts, lengths, scores,
                                   hp.student_candidates_per_query)
        model.train()
        mining_seconds += time.perf_counter() - began
        return found

    score_scale = hp.cosine_scale if not sparse else None  # sparse: set on the first batch
    own = None
    model.train()
    history: list[dict] = []
    seen_rows, window, regularizer_window = 0, [], []
    started = time.perf_counter()
    progress = tqdm(total=steps, desc="batch distillation", unit="step", disable=not workers.main)
    for step, chosen in zip(range(steps), batches()):
        if hp.student_candidates_per_query and (
                own is None or (hp.student_candidates_every and step % hp.student_candidates_every == 0)):
            with autocast:
                own = mine_own_candidates()
        pooled = [int(c) for r in chosen for c in candidates[r]]
        if own is not None:
            pooled += [int(c) for r in chosen for c in own[r]]
        chunks = length_sorted_chunks(dict.fromkeys(pooled), lengths, ENCODE_CHUNK if sparse else POOL_CHUNK)
        pool = [c for chunk in chunks for c in chunk]
        teacher = torch.from_numpy(scores.lookup(chosen, pool, hp.teacher_temperature)[0]).to(device)
        with autocast:
            queries = embed([rows[r]["query"] for r in chosen])
            docs = torch.cat([embed([texts[c] for c in chunk]) for chunk in chunks])
            student = queries @ docs.T
            if score_scale is None:
                values, variance = (torch.from_numpy(a).to(device) for a in scores.lookup(chosen, pool))
                score_scale = hp.sparse_score_scale or workers.mean(spread_ratio(student, values, variance),
                                                                    device)
            student = student * (score_scale * log_factor.exp())
            loss = batch_kl_loss(student.float(), teacher, temperature=hp.teacher_temperature)
            if sparse:
                ramp = min(1.0, (step + 1) / max(1, steps // 3))  # regularisers ramp up over the first third
                regularizer = ramp * (hp.query_regularizer_weight * _flops(queries.float())
                                      + hp.document_regularizer_weight * _flops(docs.float()))
                loss = loss + regularizer
                # Logged apart: at the default weights it measured about 0.1% of the loss (Cranfield, 2026-12-03).
                regularizer_window.append(float(regularizer.detach()))
        optimizer.zero_grad()
        loss.backward()
        workers.average_gradients(p for group in optimizer.param_groups for p in group["params"])
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if average is not None:
            average.update(step)
        seen_rows += len(chosen) * workers.world_size
        window.append(workers.mean(float(loss.detach()), device))
        progress.update(1)
        if (step + 1) % max(1, hp.logging_steps) == 0 or step + 1 == steps:
            entry = {"step": step + 1, "epoch": round(seen_rows / len(rows), 3), "loss": float(np.mean(window)),
                     "learning_rate": float(schedule.get_last_lr()[0]), "total_steps": steps,
                     "score_scale": round(score_scale * float(log_factor.detach().exp()), 4)}
            if regularizer_window:  # sparse: the FLOPS term's part of `loss`
                entry["regularizer"] = float(np.mean(regularizer_window))
            if mining_seconds:
                entry["student_candidates_seconds"], mining_seconds = round(mining_seconds, 2), 0.0
            history.append(entry)
            window, regularizer_window = [], []
            if on_log and workers.main:
                on_log(entry)
    progress.close()
    train_seconds = time.perf_counter() - started
    if average is not None:
        average.apply()
    if hp.untie_output_embeddings:
        give_the_head_its_own_bias(model)
    workers.check_in_sync(model, device)
    model.eval()
    model.max_seq_length = hp.max_seq_length
    if workers.main:
        model.save_pretrained(str(model_dir))
    return TrainingOutcome(
        model_dir=str(model_dir), steps=steps, rows=len(rows), train_seconds=round(train_seconds, 3),
        samples_per_second=round(seen_rows / train_seconds, 3), final_loss=history[-1]["loss"] if history else None,
        loss_history=history, device=device_type, precision=precision, processes=workers.world_size,
    )
