"""The run's held-out synthetic queries by subset, BM25 / tuned / BM25 + tuned by RRF at model weight 0.5 and 0.7.

A lead, not a rule: which subset agrees with the real queries that the weighted hybrid query beats BM25?
    PYTHONPATH=. .venv/bin/python benchmarks/results/tuned-dense-weighted-rrf-2026-12-07/held_out_subsets.py WORK_DIR
"""
import json
import statistics
import sys
from pathlib import Path

from finetune_assets.core.data.pairs import document_text
from finetune_assets.core.jsonl import read_jsonl
from finetune_assets.core.retrieval.evaluation import compare_systems
from finetune_assets.core.retrieval.fusion import FusionSetting, fuse_runs
from finetune_assets.core.retrieval.metrics import per_query
from finetune_assets.resources.base_model import BaseModelResource
from finetune_assets.resources.storage import ArtifactStorage
from finetune_assets.stages.evaluation.evaluation_report import held_out_judgements

W = sys.argv[1]
index = next(p.name for p in Path(W, "storage", "artifacts").iterdir())  # a benchmark work dir holds one partition
storage = ArtifactStorage(root=f"{W}/storage")
docs = list(read_jsonl(storage.fetch(index, "raw_corpus") / "documents.jsonl"))
pairs = list(read_jsonl(storage.fetch(index, "training_pairs") / "held_out.jsonl"))
queries, qrels = held_out_judgements(pairs)
bm = BaseModelResource(model_type="dense", base_model="local:bge-small-en")
cmp = compare_systems([d["id"] for d in docs], [document_text(d) for d in docs], queries, qrels,
                      {"tuned": bm.load(str(storage.fetch(index, "trained_model") / "model"))}, batch_size=bm.batch_size)
bm25, tuned = cmp.scored_runs["bm25"], cmp.scored_runs["tuned"]
runs = {"bm25": {q: [d for d, _ in v] for q, v in bm25.items()}, "tuned": {q: [d for d, _ in v] for q, v in tuned.items()},
        "hybrid0.5": fuse_runs(bm25, tuned, FusionSetting("rrf")), "hybrid0.7": fuse_runs(bm25, tuned, FusionSetting("rrf", model_weight=0.7))}
per = {n: per_query(r, qrels, "ndcg@10") for n, r in runs.items()}
# held_out_judgements ids: map back by query text
text_to_type = {p["query"]: p["query_type"] for p in pairs}
bm25_first = {q: (runs["bm25"][q][:1] == list(qrels[q])[:1]) for q in qrels}
subsets = {"all": list(qrels), "factoid": [q for q in qrels if text_to_type.get(queries[q]) == "factoid"],
           "conceptual": [q for q in qrels if text_to_type.get(queries[q]) == "conceptual"],
           "bm25 not first": [q for q in qrels if not bm25_first[q]]}
out = {}
for name, qs in subsets.items():
    out[name] = {"queries": len(qs), **{n: round(statistics.mean(per[n][q] for q in qs), 4) for n in per}}
    print(name, out[name])
json.dump(out, open(sys.argv[2] if len(sys.argv) > 2 else "held-out-subsets.json", "w"), indent=2)
