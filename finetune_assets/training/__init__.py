"""The training entry point: `python -m finetune_assets.training`, the same locally and on SageMaker."""
