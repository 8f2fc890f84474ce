"""queries: synthetic queries for the sampled documents (bedrock_batch_outputs), from Bedrock or a local model."""
from finetune_assets.stages.queries.bedrock_batch_outputs import bedrock_batch_outputs

assets = [bedrock_batch_outputs]
asset_checks = []
sensors = []
