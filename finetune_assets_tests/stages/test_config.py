"""Asset settings: every field declares its valid range, a bad value stops the run before any work with a message
naming the field, the value and the range, and Hyperparameters come from TrainedModelConfig by field name."""
from __future__ import annotations

import typing

import pytest
from annotated_types import Ge, Gt, Le, Lt
from dagster import DagsterInstance, DagsterInvalidConfigError, materialize

from finetune_assets.core.cost.smart_defaults import batch_kl_lookup, resolve, resolve_batch_kl
from finetune_assets.core.training.dense_training import (
    EXPERIMENTAL_FIELDS,
    SETTING_FIELDS,
    Hyperparameters,
    total_steps,
)
from finetune_assets.resources.base_model import BaseModelResource
from finetune_assets.stages.run_config import config_classes, op_config
from finetune_assets.stages.training.trained_model import (
    RUN_FIELDS,
    TrainedModelConfig,
    smart_settings,
    training_hyperparameters,
)
from finetune_assets_tests.conftest import write_tiny_corpus

# Free text checked where it is used (a path, a field name, a model or instance id): no range to declare.
FREE_TEXT = {"name", "text_field", "vector_field", "source", "id_field", "title_field", "synonyms_path", "teacher", "teacher_companion",
             "bedrock_model_id", "training_instance_type", "endpoint_instance_type", "instance_type", "image_uri"}
# Fields without a pydantic bound whose class validator checks them (a list or mapping).
VALIDATED = {"text_fields", "negative_sources", "teacher_weights", "enforce_for", "experimental", "opensearch_query"}


def bare(annotation):
    """int for Optional[int]; the annotation itself otherwise."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if typing.get_origin(annotation) is typing.Union and len(args) == 1 else annotation


@pytest.mark.parametrize("op", sorted(config_classes()))
def test_every_field_declares_its_valid_range(op):
    for name, field in config_classes()[op].model_fields.items():
        kind = bare(field.annotation)
        if kind in (int, float):
            assert any(isinstance(m, (Ge, Gt, Le, Lt)) for m in field.metadata), f"{op}.{name} has no bound"
        elif kind is str:
            assert name in FREE_TEXT, f"{op}.{name} is free text: make it a Literal of its choices"
        elif typing.get_origin(kind) is typing.Literal:
            assert field.default in typing.get_args(kind), f"{op}.{name}"
        elif kind is not bool:
            assert name in VALIDATED, f"{op}.{name} ({kind}) is neither bounded nor validated"
        assert field.description and field.description.endswith("."), f"{op}.{name} needs a one-sentence description"


@pytest.mark.parametrize("op, config, expected", [
    ("trained_model", {"epochs": 0}, "epochs=0: Input should be greater than 0"),
    ("trained_model", {"batch_size": 0}, "batch_size=0: Input should be greater than or equal to 1"),
    ("trained_model", {"warmup_ratio": 1.0}, "warmup_ratio=1.0: Input should be less than 1"),
    ("trained_model", {"num_negatives": -1}, "num_negatives=-1: Input should be greater than or equal to 0"),
    ("trained_model", {"soup_size": 0}, "soup_size=0: Input should be greater than or equal to 1"),
    ("trained_model", {"experimental": {"average_weights_from": 1.0}},
     "hyperparameter average_weights_from must be >= 0 and < 1 (0 = save the last weights), got 1.0"),
    ("trained_model", {"experimental": {"soup_size": 2}}, "unknown option(s) soup_size; valid: student_candidates"),
    ("trained_model", {"experimental": {"dropout": 1.0}},
     "hyperparameter dropout must be >= 0 and < 1 (null = the model's own), got 1.0"),
    ("trained_model", {"experimental": {"dropuot": 0.1}}, "unknown option(s) dropuot; valid: "),
    ("trained_model", {"experimental": {"student_candidates_every": 40}},
     "student_candidates_every is 40 but student_candidates_per_query is 0"),
    ("cost_estimate", {"max_cost_usd": -5}, "max_cost_usd=-5: Input should be greater than 0"),
    ("cost_estimate", {"enforce_for": ["sagemaker"]}, "unknown cost group 'sagemaker'; use 'auto', 'bedrock'"),
    ("cost_estimate", {"serverless_memory_mb": 1500}, "serverless_memory_mb=1500: Input should be a multiple of 1024"),
    ("trained_model", {"training_rows_per_second": 0}, "training_rows_per_second=0: Input should be greater than 0"),
    ("trained_model", {"training_budget_minutes": -1}, "training_budget_minutes=-1: Input should be greater than 0"),
    ("training_pairs", {"held_out_fraction": 0}, "held_out_fraction=0: Input should be greater than 0"),
    ("training_pairs", {"min_words": 5, "max_words": 3}, "max_words (3) must be >= min_words (5)"),
    ("mined_negatives", {"range_min": 10, "range_max": 5}, "range_max (5) must be greater than range_min (10)"),
    ("mined_negatives", {"negative_sources": ["dense", "splade"]}, "negative_sources are distinct names out of dense"),
    ("mined_negatives", {"teacher_weights": [0.5, 0.6]}, "teacher_weights must each be >= 0 and sum to 1"),
    ("mined_negatives", {"experimental": {"roundtrip_top_k": 5, "roundtrip_rerank_depth": 3}},
     "roundtrip_rerank_depth (3) must be 0 or at least roundtrip_top_k (5)"),
    ("mined_negatives", {"experimental": {"roundtrip": 5}}, "unknown option(s) roundtrip; valid: roundtrip_top_k"),
    ("bedrock_batch_outputs", {"queries_per_type": 0}, "queries_per_type=0: Input should be greater than or equal to 1"),
    ("raw_corpus", {"slices": 0}, "slices=0: Input should be greater than or equal to 1"),
    ("raw_corpus", {"text_fields": ["text", " "]}, "text_fields entry 2 is empty"),
    ("evaluation_report", {"tolerance": 2}, "tolerance=2: Input should be less than or equal to 1"),
    ("model_endpoint", {"max_concurrency": 201}, "max_concurrency=201: Input should be less than or equal to 200"),
])
def test_a_bad_value_is_named_with_the_valid_range(op, config, expected):
    with pytest.raises(ValueError) as error:
        op_config({"ops": {op: {"config": config}}}, op)
    assert str(error.value).startswith(f"invalid config for {op}: ") and expected in str(error.value), error.value


def run(tmp_path, run_config, selection=("raw_corpus", "cost_estimate", "bedrock_batch_outputs", "training_pairs",
                                         "mined_negatives", "trained_model")):
    from finetune_assets.definitions import all_assets, defs
    from finetune_assets.resources.storage import ArtifactStorage

    write_tiny_corpus(tmp_path / "corpora" / "tiny")
    resources = {**defs.resources, "storage": ArtifactStorage(root=str(tmp_path))}
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("index", ["tiny"])
        return materialize(all_assets, selection=list(selection), partition_key="tiny", resources=resources,
                           instance=instance, raise_on_error=False, run_config=run_config)


@pytest.mark.parametrize("op, config, expected", [
    ("trained_model", {"epochs": 0}, "invalid config for trained_model: epochs=0: Input should be greater than 0"),
    ("trained_model", {"batch_size": 0},
     "invalid config for trained_model: batch_size=0: Input should be greater than or equal to 1"),
    ("cost_estimate", {"max_cost_usd": -5},
     "invalid config for cost_estimate: max_cost_usd=-5: Input should be greater than 0"),
])
def test_a_bad_value_stops_the_run_in_its_first_step_before_any_work(tmp_path, op, config, expected):
    result = run(tmp_path, {"ops": {"raw_corpus": {"config": {"max_documents": 0}}, op: {"config": config}}})
    assert not result.success and not result.get_step_success_events()
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert failure.step_key == "raw_corpus" and expected in failure.step_failure_data.error.to_string()
    assert not (tmp_path / "artifacts").exists()  # not even the corpus sample was written


def test_a_choice_outside_its_literal_is_refused_before_the_run_starts(tmp_path):
    with pytest.raises(DagsterInvalidConfigError) as error:
        run(tmp_path, {"ops": {"trained_model": {"config": {"loss": "kl"}}}})
    message = str(error.value)
    assert "root:ops:trained_model:config:loss" in message and "got kl" in message and "'batch_kl'" in message


def hyperparameters(model_type: str, config: TrainedModelConfig | None = None, loss: str = "batch_kl",
                    documents: int = 2000) -> Hyperparameters:
    """What trained_model builds for a default run: the table's values where the config leaves them null."""
    config = config or TrainedModelConfig()
    unset = smart_settings(config, loss)
    chosen = resolve_batch_kl(unset, model_type)[0] if loss == "batch_kl" else resolve(unset, model_type, documents)[0]
    return training_hyperparameters(config, chosen, loss=loss, num_negatives=1,
                                    base_model=BaseModelResource(model_type=model_type))


# What a default run trained with before settings moved to one place (-1 and 0 "unset" placeholders now None).
BEFORE = {"warmup_ratio": 0.1, "max_seq_length": 256, "num_negatives": 1, "seed": 0, "precision": "auto",
          "logging_steps": 5, "idf_learning_rate": 1e-3, "cosine_scale": 20.0, "sparse_score_scale": None,
          "soup_size": 1, "gradient_checkpointing": False, "student_candidates_per_query": 0, "student_candidates_every": 0,
          "average_weights_from": 0.0, "untie_output_embeddings": False, "dropout": None, "teacher_temperature": 1.0,
          "output_bias_learning_rate": None, "score_scale_learning_rate": None, "frozen_layers": 0}
DENSE_BATCH_KL = {**BEFORE, "model_type": "dense", "base_model": "local:bge-small-en", "loss": "batch_kl",
                  "epochs": 2.0, "max_steps": 80, "batch_size": 32, "learning_rate": 5e-5,
                  "train_max_seq_length": 256, "candidates_per_query": 2,
                  "query_regularizer_weight": 0.0, "document_regularizer_weight": 0.0,
                  "attention_dropout": 0.0}  # changed since: attention dropout 0, 80 steps, 2 candidates (docs/benchmarks.md)
SPARSE_BATCH_KL = {**BEFORE, "model_type": "sparse", "base_model": "local:splade-tiny", "loss": "batch_kl",
                   "epochs": 2.0, "max_steps": 160, "batch_size": 32, "learning_rate": 3e-4,
                   "train_max_seq_length": 128, "candidates_per_query": 8,
                   "query_regularizer_weight": 5e-5, "document_regularizer_weight": 3e-5, "attention_dropout": None}
INFERENCE_FREE_MNRL = {**BEFORE, "model_type": "inference_free", "base_model": "local:splade-tiny", "loss": "mnrl",
                       "epochs": 1.0, "max_steps": 0, "batch_size": 16, "learning_rate": 2e-5,
                       "train_max_seq_length": None, "candidates_per_query": 4,
                       "query_regularizer_weight": 0.0, "document_regularizer_weight": 3e-4,
                       "attention_dropout": None}


def test_a_default_run_trains_with_the_same_hyperparameters_as_before():
    assert hyperparameters("dense").to_dict() == DENSE_BATCH_KL
    assert hyperparameters("sparse").to_dict() == SPARSE_BATCH_KL
    assert hyperparameters("inference_free", loss="mnrl").to_dict() == INFERENCE_FREE_MNRL
    # The shipped table holds those values: 32 queries a step; dense 80 steps, 5e-5, 256 tokens, 2 candidates;
    # sparse 160 steps, 3e-4, 128 tokens, 8 candidates.
    for model_type, expected in (("dense", (80, 5e-5, 256, 2)), ("sparse", (160, 3e-4, 128, 8))):
        entry = batch_kl_lookup(model_type)
        assert entry.batch_size == 32
        assert (entry.max_steps, entry.learning_rate, entry.max_seq_length, entry.candidates_per_query) == expected


def test_every_trained_model_setting_reaches_the_hyperparameters_by_name():
    changed = {"epochs": 3.0, "batch_size": 7, "learning_rate": 1e-4, "warmup_ratio": 0.2, "max_seq_length": 96,
               "num_negatives": 1, "precision": "fp32", "seed": 4, "loss": "batch_kl", "max_steps": 9,
               "candidates_per_query": 2, "soup_size": 2, "query_regularizer_weight": 1e-6,
               "document_regularizer_weight": 2e-6, "gradient_checkpointing": True,
               "attention_dropout": 0.05}
    assert set(changed) == set(TrainedModelConfig.model_fields) - set(RUN_FIELDS)  # a new field needs a case here
    experimental = {"student_candidates_per_query": 3, "student_candidates_every": 5,
                    "average_weights_from": 0.5, "untie_output_embeddings": True, "dropout": 0.0,
                    "teacher_temperature": 2.0, "output_bias_learning_rate": 0.01, "score_scale_learning_rate": 0.02,
                    "frozen_layers": 1}
    assert set(experimental) == set(EXPERIMENTAL_FIELDS)
    config = TrainedModelConfig(**changed, experimental=experimental)
    hp = hyperparameters("sparse", config)
    for name, value in {**changed, **experimental}.items():
        assert getattr(hp, SETTING_FIELDS.get(name, name)) == value, name
    assert hp.max_seq_length == BaseModelResource().max_seq_length  # what the saved model reads


def test_hyperparameters_refuse_out_of_range_values_by_name_also_from_sagemaker_strings():
    for values, expected in [({"epochs": "0"}, "hyperparameter epochs must be > 0, got 0.0"),
                             ({"batch_size": "0"}, "hyperparameter batch_size must be >= 1, got 0"),
                             ({"precision": "fp8"}, "hyperparameter precision must be one of auto, fp32, bf16, fp16"),
                             ({"warmup_ratio": "-0.1"}, "hyperparameter warmup_ratio must be >= 0 and < 1, got -0.1"),
                             ({"batch_size": "2.5"}, "hyperparameter batch_size='2.5' is not a valid int")]:
        with pytest.raises(ValueError) as error:
            Hyperparameters.from_mapping(values)
        assert str(error.value).startswith(expected), error.value
    # null reaches an optional field as None, its documented meaning
    assert Hyperparameters.from_mapping({"dropout": "null", "train_max_seq_length": "None"}).dropout is None


def test_zero_training_steps_is_an_error_not_a_published_base_model():
    with pytest.raises(ValueError, match=r"training would run 0 steps \(0 rows, batch_size 16"):
        total_steps([], Hyperparameters())
    assert total_steps([{}] * 20, Hyperparameters(epochs=0.01)) == 1  # a fraction of an epoch still steps
    assert total_steps([{}] * 20, Hyperparameters(epochs=2, max_steps=3)) == 3


def test_the_entry_point_refuses_a_run_that_trained_zero_steps(tmp_path, monkeypatch):
    from finetune_assets.core.jsonl import write_json, write_jsonl
    from finetune_assets.core.training.dense_training import TrainingOutcome
    from finetune_assets.training import entrypoint

    write_jsonl(tmp_path / "train.jsonl", [{"query": "q", "positive": "p"}])
    write_json(tmp_path / "hp.json", {"epochs": 1})
    monkeypatch.setattr(entrypoint, "train_soup", lambda *args, **kwargs: TrainingOutcome(
        model_dir=str(tmp_path / "model"), steps=0, rows=1, train_seconds=0.0, samples_per_second=0.0,
        final_loss=None))
    with pytest.raises(RuntimeError, match="training ran 0 steps on 1 rows .* holds the untouched base model"):
        entrypoint.main(["--train-dir", str(tmp_path), "--model-dir", str(tmp_path / "model"),
                         "--hyperparameters", str(tmp_path / "hp.json")])
    assert not (tmp_path / "model" / "training_log.json").exists()
    write_json(tmp_path / "hp.json", {"batch_size": "0"})  # SageMaker's strings are checked as well
    with pytest.raises(ValueError, match="hyperparameter batch_size must be >= 1, got 0"):
        entrypoint.main(["--train-dir", str(tmp_path), "--model-dir", str(tmp_path / "model"),
                         "--hyperparameters", str(tmp_path / "hp.json")])
