"""A benchmark run's held-out synthetic queries by subset: BM25, tuned, and BM25 + tuned by RRF at model weight 0.5
and 0.7. A lead, not a rule: which subset agrees with the real queries that the weighted hybrid query beats BM25?

    PYTHONPATH=. .venv/bin/python benchmarks/results/tuned-dense-weighted-rrf-2026-12-07/held_out_subsets.py \\
        BENCHMARK.json OUT.json
"""
import json
import sys
from pathlib import Path

from finetune_assets.core.data.pairs import document_text
from finetune_assets.core.jsonl import read_json, read_jsonl
from finetune_assets.core.retrieval.evaluation import compare_systems
from finetune_assets.core.retrieval.fusion import RRF, FusionSetting, fuse_runs
from finetune_assets.core.retrieval.metrics import per_query
from finetune_assets.resources.base_model import BaseModelResource
from finetune_assets.resources.storage import ArtifactStorage
from finetune_assets.stages.evaluation.evaluation_report import held_out_judgements, held_out_query_types

bench = read_json(Path(sys.argv[1]))
storage = ArtifactStorage(root=str(Path(bench["work_dir"]) / "storage"))
index = Path(bench["collection"]).name.lower()
docs = list(read_jsonl(storage.fetch(index, "raw_corpus") / "documents.jsonl"))
pairs = list(read_jsonl(storage.fetch(index, "training_pairs") / "held_out.jsonl"))
queries, qrels = held_out_judgements(pairs)
settings = bench["settings"]
base_model = BaseModelResource(model_type=settings["model_type"], base_model=settings["base_model"])
comparison = compare_systems([d["id"] for d in docs], [document_text(d) for d in docs], queries, qrels,
                             {"tuned": base_model.load(str(storage.fetch(index, "trained_model") / "model"))},
                             batch_size=base_model.batch_size)
bm25, tuned = comparison.scored_runs["bm25"], comparison.scored_runs["tuned"]
for weight in (0.5, 0.7):
    fused = fuse_runs(bm25, tuned, FusionSetting(RRF, model_weight=weight))
    comparison.ndcg_per_query[f"hybrid_tuned {weight:g}"] = per_query(fused, qrels, "ndcg@10")
groups = {"all": list(qrels), **held_out_query_types(pairs),
          # chosen by BM25's own misses, so biased against BM25: reported, no candidate
          "bm25 not first": [q for q in qrels if comparison.runs["bm25"][q][:1] != list(qrels[q])]}
figures = comparison.ndcg_by_group(groups)
print(json.dumps(figures, indent=2))
Path(sys.argv[2]).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
