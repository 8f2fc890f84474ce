from collections.abc import Sequence

from dagster import ConfigurableResource
from pydantic import Field

from finetune_assets.core.model_types import MODEL_TYPES, check_model_type, default_base_model
from finetune_assets.core.offline_models import PACKAGED_KINDS, resolve_base_model


class BaseModelResource(ConfigurableResource):
    """The model we start from: used to mine negatives, as the training start point and as the baseline."""

    model_type: str = Field(default="dense", description=f"One of {', '.join(MODEL_TYPES)}: a dense bi-encoder, "
                                                         "SPLADE, or inference-free SPLADE (IDF query weights)")
    base_model: str = Field(default="", description="local:bge-small-en (the dense default), "
                                                    "local:all-MiniLM-L6-v2 (dense: half the training time and memory, "
                                                    "a weaker model), local:splade-tiny (the sparse default), a model "
                                                    "folder or a Hugging Face id; empty = the default for model_type")
    max_seq_length: int = Field(default=256, description="Tokens per text; longer documents are truncated")
    batch_size: int = Field(default=64, description="Encoding batch size")
    document_prune_ratio: float = Field(
        default=0.1, ge=0, lt=1,
        description="Sparse types: each indexed document keeps the tokens weighing at least this share of its "
                    "largest weight (the sparse_encoding processor's max_ratio pruning, OpenSearch 2.19+), which "
                    "cuts search cost without measured loss; evaluation_report raises it, to at most 0.2, until the "
                    "tuned model costs no more FLOPS than the base model, and search_pipeline's ingest pipeline "
                    "uses what it chose. 0 keeps every token.")

    @property
    def model_name(self) -> str:
        model_type = check_model_type(self.model_type)
        kind = PACKAGED_KINDS.get(self.base_model.strip().lower())
        if kind and (kind == "dense") != (model_type == "dense"):
            what = "a dense bi-encoder" if kind == "dense" else "a SPLADE model"
            raise ValueError(f"base_model {self.base_model} is {what} but model_type is {model_type}: set model_type "
                             f"{kind}, or base_model {default_base_model(model_type)}")
        return self.base_model or default_base_model(model_type)

    @property
    def prune_ratio(self) -> float:
        """The document pruning the tuned model's index gets: `document_prune_ratio` for sparse types, 0 for dense."""
        return 0.0 if check_model_type(self.model_type) == "dense" else self.document_prune_ratio

    def load(self, path: str | None = None):
        """The base model (or a trained one at `path`): a SentenceTransformer, or a SparseEncoder for sparse types.

        For inference_free without `path` this is the plain SPLADE base; see `load_baseline`.
        """
        if check_model_type(self.model_type) == "dense":
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(path or resolve_base_model(self.model_name), device=None)
            model.max_seq_length = self.max_seq_length
            return model
        from finetune_assets.core.training.sparse_training import load_splade

        return load_splade(path or self.model_name, self.max_seq_length)

    def load_baseline(self, documents: Sequence[str]):
        """The untuned system to compare the tuned model with; an inference-free baseline takes its IDF
        query weights from `documents`."""
        model = self.load()
        if self.model_type != "inference_free":
            return model
        from finetune_assets.core.training.sparse_training import inference_free_model

        return inference_free_model(model, documents)
