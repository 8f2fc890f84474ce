"""training: pairs from the queries (training_pairs), hard negatives and teacher scores (mined_negatives), and the
fine-tuned model (trained_model)."""
from finetune_assets.stages.training.mined_negatives import mined_negatives
from finetune_assets.stages.training.trained_model import trained_model
from finetune_assets.stages.training.training_pairs import held_out_documents_unseen, training_pairs

assets = [training_pairs, mined_negatives, trained_model]
asset_checks = [held_out_documents_unseen]
sensors = []
