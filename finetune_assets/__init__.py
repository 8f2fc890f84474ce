"""finetune-assets: fine-tune a retrieval model on an OpenSearch corpus, as Dagster assets."""
