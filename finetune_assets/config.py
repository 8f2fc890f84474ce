"""Typed run configuration, one class per asset, with defaults that work offline on a laptop CPU."""
from __future__ import annotations

from typing import Optional

from dagster import Config
from pydantic import Field

from finetune_assets.core import cost

# Settings left at None are filled from core/smart_defaults.toml, by model type and corpus size.
_SMART = "None = the smart-defaults table's value for the model type and corpus size"


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
    queries_per_type: Optional[int] = Field(default=None, description="Factoid and conceptual queries asked per "
                                            f"document ({_SMART})")
    max_documents: int = Field(default=0, description="Generate for the first N sampled documents only (0 = all); "
                               "the rest still serve as negatives and for title queries")
    max_document_chars: int = Field(default=1500, description="Document text shown to the generator")


class TrainingPairsConfig(Config):
    held_out_fraction: float = Field(default=0.2, description="Share of documents whose queries are held out for evaluation")
    min_words: int = Field(default=2, description="Shortest query kept, in words (Korean, Chinese, Japanese: "
                           "2 characters count as a word)")
    max_words: int = Field(default=32, description="Longest query kept, in words (counted as for min_words)")
    seed: int = 0
    synonyms_path: str = Field(default="", description="Bilingual synonym dictionary (TSV term<TAB>synonym, or "
                               "JSON {term: [synonyms]}): adds training query variants with one term swapped, "
                               "e.g. 검색 <-> search ('' = off)")
    max_variants_per_query: int = Field(default=1, description="Most synonym variants added per training query")
    title_queries: bool = Field(default=False, description="Also train on each document's title as a query for "
                                "its body, for every sampled document with a title (free: no generation)")
    span_queries: int = Field(default=2, description="Also use up to this many sentences of each sampled document "
                              "as queries (free: no generation); their source document is masked, so they teach the "
                              "teacher's ranking of the other documents (trained_model loss batch_kl)")


class MinedNegativesConfig(Config):
    num_negatives: Optional[int] = Field(default=None, description="Hard negatives per pair (0 = in-batch negatives "
                                         f"only; {_SMART})")
    range_min: int = Field(default=3, description="Skip this many top-ranked candidates (likely unjudged positives)")
    range_max: int = Field(default=50, description="Consider candidates up to this rank")
    relative_margin: Optional[float] = Field(default=0.05, description="A negative must score below positive x "
                                             "(1 - margin); null = no margin guard")
    negative_sources: list[str] = Field(default=["dense"], description="Candidate sources merged by rank: "
                                        "the base model ('dense') and BM25 ('bm25'); each gets range_min/range_max")
    roundtrip_top_k: int = Field(default=0, description="Keep a training query only if the base model (or the "
                                 "teacher) ranks its source document within this many (0 = keep all; 5 kept 78% "
                                 "of SmolLM2's CACM queries)")
    roundtrip_rerank_depth: int = Field(default=10, description="With a teacher: rerank this many of the base "
                                        "model's top documents for the round trip (0 = base model ranks only)")
    teacher_margin: Optional[float] = Field(default=1.0, description="With a teacher: drop a candidate the "
                                            "teacher scores above the positive's score minus this (teacher units; "
                                            "likely false negative); null = no teacher guard")
    teacher: str = Field(default="auto", description="Teacher that scores positive and negatives for distillation "
                         "losses: 'hybrid' (BM25 + the base model + teacher_companion, z-scores summed), 'default' "
                         "(ms-marco-MiniLM-L-12-v2 cross-encoder, int8 ONNX, offline), a CrossEncoder path "
                         "or hub id, or '' for none. 'auto' = the hybrid teacher's score matrix for trained_model's "
                         "batch_kl only (negatives are mined and guarded as with no teacher). Any hybrid teacher "
                         "writes that matrix")
    teacher_companion: str = Field(default="auto", description="A third model in the hybrid teacher, beside BM25 "
                                   "and the base model: 'auto' = SPLADE-tiny for a dense base model, all-MiniLM-L6-v2 "
                                   "and bge-small-en (a fourth signal) for a sparse one; a model folder or "
                                   "id, or '' for BM25 + base model only. Weights: BM25 0.3, a dense model 0.4, a "
                                   "sparse model 0.3. Several, comma-separated ('auto, local:bge-small-en', the "
                                   "packaged int8 ONNX bge-small): BM25 0.2, each sparse signal 0.2, the dense ones "
                                   "share the rest")
    teacher_weights: Optional[list[float]] = Field(default=None, description="The hybrid teacher's weights for "
                                                   "BM25, the base model and each teacher_companion, summing to 1 "
                                                   "(null = by kind: BM25 0.3, dense 0.4, sparse 0.3)")
    teacher_max_length: int = Field(default=256, description="Teacher tokens per (query, passage) pair")
    teacher_threads: int = Field(default=0, description="ONNX teacher CPU threads (0 = onnxruntime default)")


class TrainedModelConfig(Config):
    epochs: Optional[float] = Field(default=None, description=f"Passes over the training rows ({_SMART})")
    batch_size: Optional[int] = Field(default=None,
                                      description=f"Rows per step, also the in-batch negatives ({_SMART})")
    learning_rate: Optional[float] = Field(default=None, description=f"Peak learning rate ({_SMART})")
    warmup_ratio: float = 0.1
    max_seq_length: Optional[int] = Field(default=None, description="Tokens per text while training (null = the "
                                          "base_model resource's); the saved model still reads the resource's "
                                          "length. 128 trains about twice as fast as 256")
    num_negatives: int = Field(default=-1, description="Mined negatives to train with (-1 = all that were mined)")
    precision: str = Field(default="auto", description="auto | fp32 | bf16 | fp16")
    seed: int = 0
    loss: str = Field(default="auto", description="batch_kl (distil the hybrid teacher's matrix over every "
                      "document in a batch), mnrl (in-batch + mined negatives), margin_mse or distill_kl (distil the "
                      "mined_negatives teacher scores), mnrl+margin_mse (their sum); auto = batch_kl when "
                      "mined_negatives wrote a teacher matrix and the model is dense or sparse, else mnrl")
    max_steps: Optional[int] = Field(default=None, description="Stop after this many steps (0 = no cap; None = "
                                     "the batch_kl defaults' cap for batch_kl, no cap otherwise)")
    candidates_per_query: Optional[int] = Field(default=None, description="batch_kl: the teacher's top documents "
                                                "each query adds to its batch's pool (every query is scored against "
                                                f"the whole pool; {_SMART})")
    soup_size: int = Field(default=1, description="Train this many models with seeds seed, seed + 1, ... and keep "
                           "the average of their weights, a uniform model soup. Measured on sparse models: 4 halves "
                           "the FLOPS at about one model's quality, for 4 times the training time")
    student_candidates_per_query: int = Field(default=0, description="batch_kl: the student's own top documents "
                                              "each query also adds to the pool, mined over the training documents "
                                              "before the first step (0 = none): the documents it ranks too high")
    student_candidates_every: int = Field(default=0, description="batch_kl: mine the student's candidates again "
                                          "every this many steps (0 = only before the first step)")
    average_weights_from: float = Field(default=0.0, description="batch_kl: from this fraction of the steps on, "
                                        "average the weights after every step and save the mean (0 = save the "
                                        "last weights)")
    untie_output_embeddings: bool = Field(default=False, description="Sparse batch_kl: train the MLM head's "
                                          "vocabulary projection apart from the input word embeddings (one tensor "
                                          "in BERT); the saved model keeps them untied")
    dropout: Optional[float] = Field(default=None, description="batch_kl: dropout probability while training "
                                     "(null = the model's own, 0.1 for BERT models)")
    teacher_temperature: float = Field(default=1.0, description="batch_kl: divides the teacher's scores before "
                                       "its softmax (lower = sharper)")
    query_regularizer_weight: Optional[float] = Field(default=None, description="Sparse: FLOPS weight on query "
                                                      "vectors (null = the recipe default for the model type)")
    document_regularizer_weight: Optional[float] = Field(default=None, description="Sparse: FLOPS weight on "
                                                         "document vectors (null = the recipe default)")
    output_bias_learning_rate: Optional[float] = Field(default=None, description="Sparse batch_kl: learning rate "
                                                       "of the per-token output bias of the model's MLM head, "
                                                       "i.e. how much each vocabulary term counts (null = "
                                                       "learning_rate)")
    score_scale_learning_rate: Optional[float] = Field(default=None, description="batch_kl: learn a factor on the "
                                                       "student's scores at this rate (log space; null or 0 = "
                                                       "fixed scale). Training only: the saved model is unchanged")
    backend: str = Field(default="auto", description="local (a Pipes subprocess here), sagemaker (a training job), "
                         "or auto: sagemaker when FINETUNE_MODE=aws, else local")


class EvaluationReportConfig(Config):
    tolerance: float = Field(default=0.01, description="Largest nDCG@10 drop vs the base model that still passes the gate")


class ModelPackageConfig(Config):
    model_format: str = Field(default="TORCH_SCRIPT", description="TORCH_SCRIPT or ONNX")


def _default(config: type[Config], name: str):
    return config.model_fields[name].default


class CostEstimateConfig(Config):
    """What the AWS path would cost, checked before any spend. Mirror fields default to the other assets' defaults:
    set them to the values those assets run with."""

    max_cost_usd: float = Field(default=0.0, description="Fail before any spend when the enforced estimate exceeds "
                                                         "this many USD (0 = no limit)")
    enforce_for: list[str] = Field(default=["auto"], description="Cost groups checked against max_cost_usd: "
                                   "'bedrock', 'training'. 'auto' = 'bedrock' when the query generator's backend is "
                                   "bedrock, plus 'training' when training defaults to SageMaker (FINETUNE_MODE=aws); "
                                   "list 'training' yourself when you pick backend: sagemaker per run")
    bedrock_model_id: str = Field(default="", description="Model to price ('' = the query generator's model_id)")
    batch: bool = Field(default=True, description="Bedrock batch prices (on-demand below the batch minimum)")
    training_instance_type: str = Field(default=cost.DEFAULT_TRAINING_INSTANCE, description="SageMaker training instance")
    training_instance_count: int = 1
    training_rows_per_second: float = Field(default=0.0, description="Measured training throughput (a trained_model "
                                            "run's samples_per_second on that instance); 0 = the price table's default")
    endpoint_instance_type: str = Field(default=cost.DEFAULT_ENDPOINT_INSTANCE, description="Real-time endpoint instance")
    serverless_memory_mb: int = Field(default=cost.DEFAULT_SERVERLESS_MEMORY_MB,
                                      description="Serverless endpoint memory: 1024-6144 in 1024 steps")
    requests_per_month: int = Field(default=cost.DEFAULT_REQUESTS_PER_MONTH, description="Expected endpoint requests per month")
    queries_per_type: Optional[int] = _default(QueryGenerationConfig, "queries_per_type")
    generate_for_documents: int = _default(QueryGenerationConfig, "max_documents")
    max_document_chars: int = _default(QueryGenerationConfig, "max_document_chars")
    held_out_fraction: float = _default(TrainingPairsConfig, "held_out_fraction")
    num_negatives: Optional[int] = _default(MinedNegativesConfig, "num_negatives")
    epochs: Optional[float] = _default(TrainedModelConfig, "epochs")
    batch_size: Optional[int] = _default(TrainedModelConfig, "batch_size")
    loss: str = _default(TrainedModelConfig, "loss")
    max_steps: Optional[int] = _default(TrainedModelConfig, "max_steps")
    max_seq_length: Optional[int] = _default(TrainedModelConfig, "max_seq_length")
    candidates_per_query: Optional[int] = _default(TrainedModelConfig, "candidates_per_query")
    soup_size: int = _default(TrainedModelConfig, "soup_size")
    student_candidates_per_query: int = _default(TrainedModelConfig, "student_candidates_per_query")
    span_queries: int = _default(TrainingPairsConfig, "span_queries")


class ModelEndpointConfig(Config):
    deployment: str = Field(default="auto", description="none (deploy nothing), realtime (instances), serverless, "
                            "or auto: serverless when FINETUNE_MODE=aws, else none")
    instance_type: str = Field(default=cost.DEFAULT_ENDPOINT_INSTANCE, description="Real-time instance type "
                               "(ml.g*/ml.p* get the GPU image)")
    instance_count: int = Field(default=1, description="Real-time instances")
    memory_mb: int = Field(default=cost.DEFAULT_SERVERLESS_MEMORY_MB, description="Serverless memory: 1024-6144 in 1024 steps")
    max_concurrency: int = Field(default=5, description="Serverless concurrent invocations (1-200)")
    image_uri: str = Field(default="", description="Serving image ('' = the AWS PyTorch inference DLC of the region)")
