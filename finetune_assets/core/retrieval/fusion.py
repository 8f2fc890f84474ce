"""Hybrid search as OpenSearch computes it: BM25 and a model's top results fused per query.

A `hybrid` query runs each sub-query on its own and a search pipeline fuses their results:
- the `normalization-processor` rescales each sub-query's scores over that sub-query's own results
  (min_max or l2; z_score from OpenSearch 3.0, with the arithmetic mean only) and combines them with a weighted
  arithmetic, geometric or harmonic mean; a document a sub-query did not return counts in neither the sum nor the
  weights of that mean;
- the `score-ranker-processor` (OpenSearch 2.19+) ranks by reciprocal rank fusion, sum of 1 / (rank_constant + rank),
  each term times its sub-query's weight when the pipeline gives weights (OpenSearch 3.1+; before, they are ignored).
The functions here reproduce that arithmetic on ranked lists, so a setting can be chosen offline and written
as the pipeline body that gives the same ranking in the cluster.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

Z_SCORE = "z_score"
NORMALIZATIONS = ("min_max", "l2", Z_SCORE)
COMBINATIONS = ("arithmetic_mean", "geometric_mean", "harmonic_mean")
RRF = "rrf"
# OpenSearch's min_max gives the lowest result this score instead of 0 and a lone result 1.0; z_score gives it to
# every result at or below the sub-query's mean.
MIN_MAX_FLOOR = 0.001
RANK_CONSTANT = 60  # the score-ranker-processor's default
RRF_SINCE = (2, 19)  # the first OpenSearch version with the score-ranker-processor
RRF_WEIGHTS_SINCE = (3, 1)  # the first OpenSearch version whose score-ranker-processor applies weights
Z_SCORE_SINCE = (3, 0)  # the first OpenSearch version whose normalization-processor offers z_score
DEPTH = 100  # results each sub-query contributes, the hybrid query's default window

ScoredList = Sequence[tuple[str, float]]  # (document id, score), best first


@dataclass(frozen=True)
class FusionSetting:
    """One way to fuse BM25 with a model: normalisation + combination + weights (BM25, model), or RRF (weighted
    when model_weight is not 0.5)."""

    technique: str  # min_max | l2 | z_score | rrf
    combination: str = "arithmetic_mean"
    model_weight: float = 0.5  # the model sub-query's weight; BM25 gets 1 - model_weight

    def __post_init__(self) -> None:
        if self.technique not in (*NORMALIZATIONS, RRF):
            raise ValueError(f"fusion technique must be one of {', '.join((*NORMALIZATIONS, RRF))}, "
                             f"not {self.technique!r}")
        if self.technique != RRF and self.combination not in COMBINATIONS:
            raise ValueError(f"fusion combination must be one of {', '.join(COMBINATIONS)}, not {self.combination!r}")
        if self.technique == Z_SCORE and self.combination != "arithmetic_mean":
            raise ValueError(f"z_score normalisation combines by arithmetic_mean only (OpenSearch refuses "
                             f"{self.combination!r} with it)")
        if not 0.0 < self.model_weight < 1.0:
            raise ValueError(f"model_weight must be between 0 and 1 (exclusive), not {self.model_weight}")

    @property
    def weights(self) -> tuple[float, float]:
        return round(1.0 - self.model_weight, 4), round(self.model_weight, 4)

    @property
    def weighted_rrf(self) -> bool:
        """RRF with unequal weights, which needs OpenSearch 3.1+ (an older cluster would ignore them)."""
        return self.technique == RRF and self.model_weight != 0.5

    @property
    def since(self) -> tuple[int, int]:
        """The first OpenSearch version that runs this setting as written (0, 0: every version with hybrid search)."""
        if self.weighted_rrf:
            return RRF_WEIGHTS_SINCE
        return {RRF: RRF_SINCE, Z_SCORE: Z_SCORE_SINCE}.get(self.technique, (0, 0))

    @property
    def name(self) -> str:
        bm25, model = self.weights
        if self.technique == RRF:
            weights = f", weights bm25 {bm25:g} / model {model:g}" if self.weighted_rrf else ""
            return f"rrf (rank_constant {RANK_CONSTANT}){weights}"
        return f"{self.technique} + {self.combination}, weights bm25 {bm25:g} / model {model:g}"

    def to_dict(self) -> dict:
        if self.technique == RRF:
            weights = {"weights": list(self.weights)} if self.weighted_rrf else {}
            return {"technique": RRF, "rank_constant": RANK_CONSTANT, **weights}
        return {"technique": self.technique, "combination": self.combination, "weights": list(self.weights)}

    @classmethod
    def from_dict(cls, setting: dict) -> FusionSetting:
        """The setting `to_dict` wrote (a report's or benchmark's `setting`)."""
        weights = setting.get("weights") or [0.5, 0.5]
        if setting["technique"] == RRF:
            return cls(RRF, model_weight=weights[1])
        return cls(setting["technique"], setting["combination"], weights[1])

    def pipeline_body(self, description: str) -> dict:
        """The body of `PUT /_search/pipeline/<name>` that fuses a two-query hybrid search (BM25 first) this way."""
        if self.technique == RRF:
            combination = {"technique": RRF, "rank_constant": RANK_CONSTANT}
            if self.weighted_rrf:
                combination["parameters"] = {"weights": list(self.weights)}
            processor = {"score-ranker-processor": {"combination": combination}}
        else:
            processor = {"normalization-processor": {
                "normalization": {"technique": self.technique},
                "combination": {"technique": self.combination, "parameters": {"weights": list(self.weights)}},
            }}
        return {"description": description, "phase_results_processors": [processor]}


def candidate_settings(model_weights: Iterable[float] = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)) -> list[FusionSetting]:
    """Every setting tried when choosing: each normalisation x combination x model weight (z_score with the
    arithmetic mean only), then RRF at equal weights, then weighted RRF."""
    model_weights = list(model_weights)
    grid = [FusionSetting(technique, combination, weight) for technique in NORMALIZATIONS
            for combination in COMBINATIONS for weight in model_weights
            if technique != Z_SCORE or combination == "arithmetic_mean"]
    weighted = [FusionSetting(RRF, model_weight=weight) for weight in model_weights if weight != 0.5]
    return [*grid, FusionSetting(RRF), *weighted]


def normalize(scores: Sequence[float], technique: str) -> list[float]:
    """One sub-query's scores rescaled over its own results, as the normalization-processor does."""
    if not scores:
        return []
    if technique == "min_max":
        low, high = min(scores), max(scores)
        if high == low:
            return [1.0] * len(scores)
        return [(s - low) / (high - low) or MIN_MAX_FLOOR for s in scores]
    if technique == "l2":
        norm = math.sqrt(sum(s * s for s in scores))
        return [s / norm if norm else MIN_MAX_FLOOR for s in scores]
    if technique == Z_SCORE:
        return z_scores(scores)
    raise ValueError(f"unknown normalisation {technique!r}")


def z_scores(scores: Sequence[float]) -> list[float]:
    """neural-search's z_score: (score - mean) / sample standard deviation over the sub-query's results, a score
    at or below the mean floored at MIN_MAX_FLOOR; a score equal to the mean (a lone result) takes the raw maximum,
    and with no spread every score takes the raw minimum."""
    mean = sum(scores) / len(scores)
    spread = math.sqrt(sum((s - mean) ** 2 for s in scores) / (len(scores) - 1)) if len(scores) > 1 else 0.0
    out = []
    for s in scores:
        if s == mean:
            out.append(max(scores))
        elif spread == 0.0:
            out.append(min(scores))
        else:
            out.append(max((s - mean) / spread, 0.0) or MIN_MAX_FLOOR)
    return out


def combine(scores: Sequence[float | None], weights: Sequence[float], combination: str) -> float:
    """One document's normalised scores (None where a sub-query did not return it) combined with weights."""
    if combination == "arithmetic_mean":
        present = [(s, w) for s, w in zip(scores, weights) if s is not None and s >= 0.0]
        total = sum(w for _, w in present)
        return sum(s * w for s, w in present) / total if total else 0.0
    present = [(s, w) for s, w in zip(scores, weights) if s is not None and s > 0.0]
    total = sum(w for _, w in present)
    if not total:
        return 0.0
    if combination == "geometric_mean":
        return math.exp(sum(w * math.log(s) for s, w in present) / total)
    if combination == "harmonic_mean":
        return total / sum(w / s for s, w in present)
    raise ValueError(f"unknown combination {combination!r}")


def reciprocal_rank_fusion(lists: Sequence[ScoredList], weights: Sequence[float], *,
                           rank_constant: int = RANK_CONSTANT) -> dict[str, float]:
    """The score-ranker-processor's score of each document: the sum over sub-queries (any number) of the
    sub-query's weight / (rank_constant + the document's rank in it)."""
    fused: dict[str, float] = {}
    for ranked, weight in zip(lists, weights, strict=True):
        for rank, (doc, _) in enumerate(ranked, start=1):
            fused[doc] = fused.get(doc, 0.0) + weight / (rank_constant + rank)
    return fused


def fuse(bm25: ScoredList, model: ScoredList, setting: FusionSetting, *, depth: int = DEPTH) -> list[tuple[str, float]]:
    """The fused ranking of one query from each sub-query's top `depth` results, best first (ties by id)."""
    lists = [list(bm25)[:depth], list(model)[:depth]]
    if setting.technique == RRF:
        # Without weights in the pipeline every sub-query weighs 1.0 (the processor's default).
        fused: dict[str, float] = reciprocal_rank_fusion(lists, setting.weights if setting.weighted_rrf else (1.0, 1.0))
    else:
        per_doc: dict[str, list[float | None]] = {}
        for position, ranked in enumerate(lists):
            normalised = normalize([score for _, score in ranked], setting.technique)
            for (doc, _), value in zip(ranked, normalised):
                per_doc.setdefault(doc, [None] * len(lists))[position] = value
        fused = {doc: combine(values, setting.weights, setting.combination) for doc, values in per_doc.items()}
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))


def fuse_runs(bm25: Mapping[str, ScoredList], model: Mapping[str, ScoredList], setting: FusionSetting,
              *, k: int = DEPTH) -> dict[str, list[str]]:
    """Fused document ids per query (the top k) for every query either run holds."""
    return {query: [doc for doc, _ in fuse(bm25.get(query, []), model.get(query, []), setting)[:k]]
            for query in sorted(set(bm25) | set(model))}


@dataclass
class FusionChoice:
    setting: FusionSetting
    score: float  # the chosen setting's figure on the queries it was chosen on
    metric: str
    candidates: list[dict]  # every setting tried, with its figure
    rule: str  # how the setting was picked from the candidates' figures (SELECTION_RULES)

    def to_dict(self) -> dict:
        return {"chosen": self.setting.to_dict(), "chosen_name": self.setting.name, "rule": self.rule,
                "metric": self.metric, "score": self.score, "candidates": self.candidates}


def choose_setting(bm25: Mapping[str, ScoredList], model: Mapping[str, ScoredList], qrels: Mapping[str, Mapping],
                   *, metric: str = "ndcg@10", rule: str | None = None) -> FusionChoice:
    """Every candidate setting's mean `metric` on these queries and judgements, and the one `rule` picks
    (default SELECTION_RULE); a tie goes to the setting listed first, OpenSearch's default before the rest."""
    from finetune_assets.core.retrieval.metrics import evaluate_run

    if not qrels:
        raise ValueError("choosing a fusion setting needs judged queries; none were given")
    rule = rule or SELECTION_RULE
    settings = default_order(candidate_settings())
    figures = {s.name: evaluate_run(fuse_runs(bm25, model, s), qrels, (metric,))[metric] for s in settings}
    chosen = select(figures, rule)
    candidates = [{"setting": s.name, **s.to_dict(), metric: round(figures[s.name], 6)} for s in settings]
    return FusionChoice(setting=chosen, score=figures[chosen.name], metric=metric, candidates=candidates, rule=rule)


def default_order(settings: Sequence[FusionSetting]) -> list[FusionSetting]:
    """OpenSearch's default (min_max, arithmetic mean, equal weights) first, then the rest as given."""
    default = FusionSetting("min_max", "arithmetic_mean", 0.5)
    return [default, *[s for s in settings if s != default]]


# Ways to pick a setting from the held-out synthetic queries' figures (setting name -> nDCG@10); compared on the
# development collections' real judgements by benchmarks/fusion_sweep.py.
SELECTION_RULES = ("synthetic_best", "opensearch_default", "rrf", "weighted_rrf", "z_score", "synthetic_best_min_max",
                   "synthetic_best_model_half_or_more", "default_unless_synthetic_margin")
SYNTHETIC_MARGIN = 0.01
# Reciprocal rank fusion: on the development collections' real queries (benchmarks/fusion_sweep.py, sparse, the
# default teacher and one without BM25) it was never below any rule that picks on synthetic queries, which share
# their document's words and overrate BM25 (docs/benchmarks.md, "Hybrid search"). The candidates' synthetic
# figures are still computed and reported. For a tuned sparse model z_score at equal weights led RRF by 0.0048
# (Cranfield) and 0.0080 (CACM) over three seeds, both intervals including zero, so RRF stays for every type
# (docs/benchmarks.md, "z_score for the tuned sparse model").
SELECTION_RULE = "rrf"
# The model's weight for the "weighted_rrf" rule: the best mean of BM25 + tuned over the development collections
# (dense default, real queries); not the rule: it led equal weights on Cranfield and trailed on CACM, and would need
# OpenSearch 3.1 (docs/benchmarks.md, "Weighted reciprocal rank fusion").
RRF_MODEL_WEIGHT = 0.6
# For a cluster without the score-ranker-processor (before OpenSearch 2.19): OpenSearch's default normalisation,
# within 0.001 of RRF with the tuned model on the same sweep (with the base model RRF led by 0.012 and 0.046).
WITHOUT_RRF = FusionSetting("min_max", "arithmetic_mean", 0.5)


def select(figures: Mapping[str, float], rule: str) -> FusionSetting:
    """The setting `rule` picks from synthetic-query figures of the candidate settings (keyed by setting name)."""
    by_name = {s.name: s for s in default_order(candidate_settings())}
    default = next(iter(by_name.values()))
    known = [(name, value) for name, value in figures.items() if name in by_name]

    def best(keep) -> FusionSetting:
        kept = [(value, by_name[name]) for name, value in known if keep(by_name[name])]
        order = list(by_name)
        kept.sort(key=lambda pair: (-pair[0], order.index(pair[1].name)))
        return kept[0][1] if kept else default

    if rule == "synthetic_best":
        return best(lambda s: True)
    if rule == "opensearch_default":
        return default
    if rule == "rrf":
        return by_name[FusionSetting(RRF).name]
    if rule == "weighted_rrf":
        return by_name[FusionSetting(RRF, model_weight=RRF_MODEL_WEIGHT).name]
    if rule == "z_score":
        return by_name[FusionSetting(Z_SCORE, "arithmetic_mean", 0.5).name]
    if rule == "synthetic_best_min_max":
        return best(lambda s: s.technique == "min_max" and s.combination == "arithmetic_mean")
    if rule == "synthetic_best_model_half_or_more":
        return best(lambda s: s.model_weight >= 0.5)
    if rule == "default_unless_synthetic_margin":
        top = best(lambda s: True)
        return top if dict(known).get(top.name, 0.0) > dict(known).get(default.name, 0.0) + SYNTHETIC_MARGIN \
            else default
    raise ValueError(f"unknown selection rule {rule!r}; one of {', '.join(SELECTION_RULES)}")


QUERY_PLACEHOLDER = "{{query_text}}"


def hybrid_query(model_type: str, model_id: str, *, text_field: str = "text", vector_field: str = "embedding",
                 query_text: str = QUERY_PLACEHOLDER, size: int = 10, depth: int = DEPTH) -> dict:
    """A `hybrid` search body: BM25 `match` first, then the model's `neural` (dense) or `neural_sparse` sub-query,
    in the order the pipeline's weights expect. `model_id` is the query-side model (an inference-free model's
    SPARSE_TOKENIZE id)."""
    if model_type == "dense":
        model_query = {"neural": {vector_field: {"query_text": query_text, "model_id": model_id, "k": depth}}}
    elif model_type in ("sparse", "inference_free"):
        model_query = {"neural_sparse": {vector_field: {"query_text": query_text, "model_id": model_id}}}
    else:
        raise ValueError(f"model_type must be dense, sparse or inference_free, not {model_type!r}")
    lexical = {"match": {text_field: {"query": query_text}}}
    return {"size": size, "query": {"hybrid": {"queries": [lexical, model_query]}}}


def lexical_query(*, text_field: str = "text", query_text: str = QUERY_PLACEHOLDER, size: int = 10) -> dict:
    """The BM25-only search body, for a deployment without a model."""
    return {"size": size, "query": {"match": {text_field: {"query": query_text}}}}
