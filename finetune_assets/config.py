"""Typed run configuration, one class per asset, with defaults that work offline on a laptop CPU."""
from __future__ import annotations

from dagster import Config
from pydantic import Field


class RawCorpusConfig(Config):
    source: str = Field(default="", description="File or folder with the corpus; default <storage>/corpora/<index>/")
    id_field: str = Field(default="", description="Field holding the document id (default: _id, id or doc_id)")
    text_fields: list[str] = Field(default=["text"], description="Fields joined into the document text; dotted paths allowed")
    title_field: str = Field(default="title", description="Optional title field ('' for none)")
    txt_mode: str = Field(default="line", description="Plain text files: 'line' (a document per line) or 'file'")
    max_documents: int = Field(default=2000, description="Reproducible sample size (0 = all documents)")
    seed: int = 0
    from_opensearch: bool = Field(default=False, description="Dump the OpenSearch index named by the partition")
    opensearch_query: dict = Field(default={}, description="Optional filter query for the index dump")
    slices: int = Field(default=1, description="Parallel slices for the index dump")


class QueryGenerationConfig(Config):
    queries_per_type: int = Field(default=1, description="Factoid and conceptual queries asked per document")
    max_document_chars: int = Field(default=1500, description="Document text shown to the generator")


class TrainingPairsConfig(Config):
    held_out_fraction: float = Field(default=0.2, description="Share of documents whose queries are held out for evaluation")
    min_words: int = 2
    max_words: int = 32
    seed: int = 0


class MinedNegativesConfig(Config):
    num_negatives: int = Field(default=1, description="Hard negatives per pair (0 = in-batch negatives only)")
    range_min: int = Field(default=3, description="Skip this many top-ranked candidates (likely unjudged positives)")
    range_max: int = Field(default=50, description="Consider candidates up to this rank")
    relative_margin: float = Field(default=0.05, description="A negative must score below positive x (1 - margin)")


class TrainedModelConfig(Config):
    epochs: float = 1.0
    batch_size: int = 16
    learning_rate: float = 2e-5
    warmup_ratio: float = 0.1
    num_negatives: int = Field(default=-1, description="Mined negatives to train with (-1 = all that were mined)")
    precision: str = Field(default="auto", description="auto | fp32 | bf16 | fp16")
    seed: int = 0
    backend: str = Field(default="local", description="local (a Pipes subprocess here) or sagemaker (a training job)")


class EvaluationReportConfig(Config):
    tolerance: float = Field(default=0.01, description="Largest nDCG@10 drop vs the base model that still passes the gate")


class ModelPackageConfig(Config):
    model_format: str = Field(default="TORCH_SCRIPT", description="TORCH_SCRIPT or ONNX")
