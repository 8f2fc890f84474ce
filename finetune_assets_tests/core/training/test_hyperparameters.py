import pytest

from finetune_assets.core.training.dense_training import SPARSE_REGULARIZERS, Hyperparameters, training_columns


def test_sagemaker_string_values_are_parsed():
    hp = Hyperparameters.from_mapping({"epochs": "2.5", "batch_size": "32", "learning_rate": "3e-5",
                                       "base_model": "BAAI/bge-small-en-v1.5", "num_negatives": "1.0"})
    assert (hp.epochs, hp.batch_size, hp.learning_rate, hp.num_negatives) == (2.5, 32, 3e-5, 1)
    assert hp.base_model == "BAAI/bge-small-en-v1.5"


def test_unknown_and_malformed_hyperparameters_are_named():
    assert Hyperparameters.from_mapping({"sagemaker_program": "train.py"}) == Hyperparameters()
    with pytest.raises(ValueError, match="unknown hyperparameter.*epoch\\b"):
        Hyperparameters.from_mapping({"epoch": "1"})
    with pytest.raises(ValueError, match="batch_size='many'"):
        Hyperparameters.from_mapping({"batch_size": "many"})


def test_boolean_hyperparameters_read_sagemakers_strings():
    assert Hyperparameters.from_mapping({"untie_output_embeddings": "False"}).untie_output_embeddings is False
    assert Hyperparameters.from_mapping({"untie_output_embeddings": "true"}).untie_output_embeddings is True
    assert Hyperparameters.from_mapping({"untie_output_embeddings": True}).untie_output_embeddings is True
    with pytest.raises(ValueError, match="untie_output_embeddings='maybe' is not a valid bool"):
        Hyperparameters.from_mapping({"untie_output_embeddings": "maybe"})


def test_training_rows_must_have_every_column():
    rows = [{"query": "q", "positive": "p", "negative_1": "n"}, {"query": "q2", "positive": "p2"}]
    assert training_columns(rows[:1], 1) == ["query", "positive", "negative_1"]
    with pytest.raises(ValueError, match="training row 2 lacks negative_1"):
        training_columns(rows, 1)


def test_fewer_pairs_than_one_batch_is_a_clear_error(tmp_path):
    from finetune_assets.core.training.dense_training import train_dense

    rows = [{"query": f"q{i}", "positive": f"p{i}"} for i in range(3)]
    with pytest.raises(ValueError, match="only 3 training pairs, fewer than one batch \\(batch_size=16\\)"):
        train_dense(rows, Hyperparameters(batch_size=16), tmp_path / "model")


def test_model_type_picks_base_model_and_regularisers():
    assert (Hyperparameters().model_type, Hyperparameters().base_model) == ("dense", "local:bge-small-en")
    sparse = Hyperparameters.from_mapping({"model_type": "sparse"})
    assert (sparse.base_model, sparse.query_regularizer_weight, sparse.document_regularizer_weight) == (
        "local:splade-tiny", 5e-5, 3e-5)
    free = Hyperparameters.from_mapping({"model_type": "inference_free", "document_regularizer_weight": "1e-3"})
    assert (free.base_model, free.query_regularizer_weight, free.document_regularizer_weight) == (
        "local:splade-tiny", 0.0, 1e-3)
    assert Hyperparameters.from_mapping(free.to_dict()) == free   # what SageMaker passes back round-trips
    with pytest.raises(ValueError, match="unknown model_type 'colbert'"):
        Hyperparameters(model_type="colbert")


def test_trained_model_flops_weights_reach_the_hyperparameters_or_leave_the_recipe_default():
    from finetune_assets.resources.base_model import BaseModelResource
    from finetune_assets.stages.run_config import op_config
    from finetune_assets.stages.training.trained_model import TrainedModelConfig, training_hyperparameters

    def built(**weights):
        chosen = {"epochs": 1.0, "batch_size": 16, "learning_rate": 2e-5}
        return training_hyperparameters(TrainedModelConfig(**weights), chosen, loss="mnrl", num_negatives=0,
                                        base_model=BaseModelResource(model_type="sparse"))

    default = built()
    assert (default.query_regularizer_weight, default.document_regularizer_weight) == SPARSE_REGULARIZERS["sparse"]
    chosen = built(query_regularizer_weight=0.0, document_regularizer_weight=1e-6)
    assert (chosen.query_regularizer_weight, chosen.document_regularizer_weight) == (0.0, 1e-6)
    with pytest.raises(ValueError, match=r"query_regularizer_weight=-0.5: Input should be greater than or equal to 0"):
        op_config({"ops": {"trained_model": {"config": {"query_regularizer_weight": -0.5}}}}, "trained_model")
    with pytest.raises(ValueError, match=r"hyperparameter document_regularizer_weight must be >= 0 \(null = the "
                                         r"recipe default for model_type\), got -1.0"):
        Hyperparameters(model_type="sparse", document_regularizer_weight=-1.0)


def test_batch_kl_fills_only_unset_settings_from_the_tables_entry_for_its_model_type():
    from dagster import build_asset_context

    from finetune_assets.core.cost.smart_defaults import batch_kl_lookup
    from finetune_assets.stages.smart_defaults import fill_batch_kl

    unset = {"epochs": 3.0, "batch_size": None, "learning_rate": None, "max_steps": None, "max_seq_length": None,
             "candidates_per_query": None}
    sparse, metadata = fill_batch_kl(build_asset_context(), unset, "sparse")
    dense, _ = fill_batch_kl(build_asset_context(), {**unset, "max_seq_length": 64}, "dense")
    table_sparse, table_dense = batch_kl_lookup("sparse"), batch_kl_lookup("dense")
    assert (sparse["learning_rate"], dense["learning_rate"]) == (table_sparse.learning_rate, table_dense.learning_rate)
    # what the run config set is kept
    assert sparse["epochs"] == dense["epochs"] == 3.0 and dense["max_seq_length"] == 64
    assert metadata["smart_defaults"].value == {
        "filled": {"batch_size": table_sparse.batch_size, "learning_rate": table_sparse.learning_rate,
                   "max_steps": table_sparse.max_steps, "max_seq_length": table_sparse.max_seq_length,
                   "candidates_per_query": table_sparse.candidates_per_query},
        "loss": "batch_kl", "model_type": "sparse", "basis": table_sparse.basis}
    chosen, none_filled = fill_batch_kl(build_asset_context(), {"learning_rate": 1e-5}, "sparse")
    assert chosen == {"learning_rate": 1e-5} and none_filled == {}
    with pytest.raises(ValueError, match="no batch_kl entry for model type 'inference_free'"):
        fill_batch_kl(build_asset_context(), unset, "inference_free")
