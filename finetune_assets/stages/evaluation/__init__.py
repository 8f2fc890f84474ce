"""evaluation: BM25, the base model and the tuned model on held-out queries (evaluation_report), and the gate."""
from finetune_assets.stages.evaluation.evaluation_report import evaluation_report, tuned_not_worse_than_base

assets = [evaluation_report]
asset_checks = [tuned_not_worse_than_base]
sensors = []
