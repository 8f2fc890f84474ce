from dagster import ConfigurableResource
from pydantic import Field

from finetune_assets.core.offline_models import DEFAULT_DENSE_MODEL, resolve_model


class BaseModelResource(ConfigurableResource):
    """The model we start from: used to mine negatives, as the training start point and as the baseline."""

    base_model: str = Field(default=DEFAULT_DENSE_MODEL,
                            description="local:all-MiniLM-L6-v2, a model folder, or a Hugging Face id")
    max_seq_length: int = Field(default=256, description="Tokens per text; longer documents are truncated")
    batch_size: int = Field(default=64, description="Encoding batch size")

    def load(self, path: str | None = None):
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(path or resolve_model(self.base_model), device=None)
        model.max_seq_length = self.max_seq_length
        return model
