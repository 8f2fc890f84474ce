"""Two trained models of the same base on one collection's real judgements, query by query: nDCG@10 of each alone
and fused with BM25 (RRF, the pipeline's fusion rule), and B minus A with its paired-bootstrap 95% interval.

Used to choose between two training settings that ran on the same queries and seed (each a `finetune-assets
benchmark` work dir), since the benchmark's own intervals compare a tuned model with its base, not two tuned models;
a choice, so it reads the development collections only:

    PYTHONPATH=. .venv/bin/python -m benchmarks.paired_models ../shared/ir-data/cranfield dense \\
        A_WORK/storage/artifacts/cranfield/trained_model/current/model B_WORK/.../model --out paired.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from finetune_assets.core.retrieval.protocol import require_development


def compare(collection: Path, model_type: str, model_a: str, model_b: str) -> dict:
    from finetune_assets.benchmark import read_beir
    from finetune_assets.core.data.pairs import document_text
    from finetune_assets.core.retrieval.evaluation import compare_systems
    from finetune_assets.core.retrieval.fusion import RRF, FusionSetting
    from finetune_assets.definitions import defs
    from finetune_assets.resources.base_model import BaseModelResource

    corpus, queries, qrels = read_beir(collection)
    configured = defs.resources["base_model"]
    resource = BaseModelResource(model_type=model_type, max_seq_length=configured.max_seq_length,
                                 batch_size=configured.batch_size,
                                 base_model=configured.base_model if configured.model_type == model_type else "")
    texts = [document_text({"title": d.get("title", ""), "text": d["text"]}) for d in corpus]
    # compare_systems names its pair "base" and "tuned": here they are model A and model B.
    comparison = compare_systems([str(d["_id"]) for d in corpus], texts, queries, qrels,
                                 {"base": resource.load(model_a), "tuned": resource.load(model_b)},
                                 batch_size=resource.batch_size)
    for system in ("base", "tuned"):
        comparison.add_hybrid(system, qrels, setting=FusionSetting(RRF))
    alone = comparison.gain_interval()
    fused = comparison.gain_interval("hybrid_tuned", "hybrid_base")
    names = {"bm25": "bm25", "base": "a", "tuned": "b", "hybrid_base": "bm25+a", "hybrid_tuned": "bm25+b"}
    return {"collection": str(collection), "model_type": model_type, "a": model_a, "b": model_b,
            "judged_queries": comparison.judged_queries,
            "ndcg@10": {names[n]: round(v["ndcg@10"], 4) for n, v in comparison.results.items()},
            "b_minus_a": {"mean": round(alone[0], 4), "ci95": [round(alone[1], 4), round(alone[2], 4)]},
            "bm25+b_minus_bm25+a": {"mean": round(fused[0], 4), "ci95": [round(fused[1], 4), round(fused[2], 4)]}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("collection", type=Path, help="a BEIR folder with corpus.jsonl, queries.jsonl, qrels/test.tsv")
    parser.add_argument("model_type", choices=["dense", "sparse", "inference_free"])
    parser.add_argument("model_a", help="the first trained model's folder")
    parser.add_argument("model_b", help="the second trained model's folder")
    parser.add_argument("--out", type=Path, required=True, help="JSON figures")
    args = parser.parse_args(argv)
    try:
        require_development(args.collection, "a comparison of two training settings")
    except ValueError as exc:
        parser.error(str(exc))
    for folder in (args.model_a, args.model_b):
        if not Path(folder).is_dir():
            parser.error(f"no model folder at {folder}")
    result = compare(args.collection, args.model_type, args.model_a, args.model_b)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
