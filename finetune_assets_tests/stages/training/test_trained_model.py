"""trained_model: which loss a mined_negatives folder leads to, how long it trains and in how many processes."""
import pytest


def test_a_mined_negatives_folder_with_the_old_full_matrix_is_refused(tmp_path):
    from finetune_assets.stages.training.trained_model import LEGACY_SCORES_FILE, chosen_loss

    (tmp_path / LEGACY_SCORES_FILE).write_bytes(b"")
    for loss in ("auto", "batch_kl"):
        with pytest.raises(ValueError, match="re-materialize mined_negatives"):
            chosen_loss(loss, "sparse", tmp_path)
    assert chosen_loss("auto", "inference_free", tmp_path / "elsewhere") == "mnrl"


def test_a_training_longer_than_the_mined_rows_warns_with_the_setting_to_change():
    from finetune_assets.core.training.dense_training import Hyperparameters
    from finetune_assets.stages.training.trained_model import unmined_rows_warning

    def hp(max_steps):
        return Hyperparameters.from_settings({"loss": "batch_kl", "batch_size": 8, "epochs": 2.0,
                                              "max_steps": max_steps}, {}, model_type="sparse", base_model="m",
                                             max_seq_length=64)

    assert unmined_rows_warning(40, 100, hp(5)) is None  # 5 steps x 8 = the 40 rows mined
    warning = unmined_rows_warning(40, 100, hp(0))  # 2 epochs of 5 steps read 80 rows
    assert "reads 80 rows" in warning and "max_rows 80" in warning and "40 of the 100" in warning
    assert unmined_rows_warning(100, 100, hp(0)) is None  # every pair mined: epochs repeat them, nothing to change


def test_the_teacher_scores_a_seeded_subset_of_rows_or_all_of_them():
    from finetune_assets.core.teachers.teacher_top_k import reached_rows

    assert reached_rows(10, 0).tolist() == list(range(10)) == reached_rows(10, 10).tolist()
    subset = reached_rows(1000, 50)
    assert len(set(subset.tolist())) == 50 and subset.tolist() == sorted(subset.tolist())
    assert subset.tolist() == reached_rows(1000, 50).tolist() != reached_rows(1000, 50, seed=1).tolist()
    assert subset.max() > 500  # drawn over every row, not the first 50
    with pytest.raises(ValueError, match="max_rows"):
        reached_rows(10, -1)


def test_a_training_budget_replaces_the_tables_steps_at_the_training_devices_rate():
    from finetune_assets.core.cost.cost import table_rows_per_second
    from finetune_assets.core.cost.prices import load_prices
    from finetune_assets.core.training.dense_training import Hyperparameters
    from finetune_assets.resources.sagemaker_pipes import SageMakerTrainingResource
    from finetune_assets.stages.training.trained_model import TrainedModelConfig, planned_length

    hp = Hyperparameters.from_settings({"loss": "batch_kl", "batch_size": 32, "epochs": 2.0, "max_steps": 160,
                                        "candidates_per_query": 4, "max_seq_length": 128}, {},
                                       model_type="dense", base_model="m", max_seq_length=128)
    sagemaker = SageMakerTrainingResource(instance_type="ml.g5.xlarge", instance_count=2)

    def length(rows, **config):
        return planned_length(TrainedModelConfig(**config), hp, rows, "sagemaker", sagemaker)

    assert (length(100_000).steps, length(100_000).limited_by) == (160, "max_steps")  # no budget: the table's cap
    # The price table's A10G rate for 2 instances, at rows of a 16-token query and 4 passages of 128 tokens; the
    # two instances train data-parallel (torch_distributed), so a step reads 2 x 32 rows.
    rate = table_rows_per_second(load_prices(), "A10G", 2, 4, 128)
    budgeted = length(1_000_000, training_budget_minutes=30)
    assert budgeted.limited_by == "budget" and budgeted.steps == int(30 * 60 * rate // 64) > 160
    assert budgeted.rate_source == "price table, 2 x A10G" and budgeted.rows == budgeted.steps * 64
    assert f"{budgeted.steps:,} steps of 2 processes x 32 rows" in budgeted.describe()
    assert length(1_000, training_budget_minutes=30).steps == 32  # 2 epochs of 1,000 rows fit: the rows decide
    assert length(1_000_000, training_budget_minutes=30, max_steps=200).steps == 200  # the run's cap still holds
    measured = length(1_000_000, training_budget_minutes=2, training_rows_per_second=8.0)
    assert (measured.steps, measured.rate_source) == (15, "training_rows_per_second")  # 960 rows / 64
    soup = planned_length(TrainedModelConfig(training_budget_minutes=2, training_rows_per_second=8.0),
                          Hyperparameters.from_settings({**hp.to_dict(), "soup_size": 2}, {}, model_type="dense",
                                                        base_model="m", max_seq_length=128),
                          1_000_000, "local", sagemaker)
    assert soup.steps == 15  # two models share the budget (locally one process: 480 rows / 32)
    # bge-small-en trains at half the table's rate, so the same budget buys half the steps.
    bge = Hyperparameters.from_settings(hp.to_dict(), {}, model_type="dense", base_model="local:bge-small-en",
                                        max_seq_length=128)
    halved = planned_length(TrainedModelConfig(training_budget_minutes=30), bge, 1_000_000, "sagemaker", sagemaker)
    assert halved.steps == int(30 * 60 * rate / 2 // 64)


def test_sagemaker_trains_one_process_per_gpu_when_distributed_and_batch_kl_refuses_smddp():
    from finetune_assets.resources.sagemaker_pipes import SageMakerTrainingResource
    from finetune_assets.stages.training.trained_model import check_distribution, training_processes

    def job(instance_type, count=1, distribution="auto"):
        return SageMakerTrainingResource(instance_type=instance_type, instance_count=count, distribution=distribution)

    assert training_processes("local", job("ml.g5.12xlarge")) == 1  # the local subprocess is one process
    assert training_processes("sagemaker", job("ml.g5.xlarge")) == 1
    assert training_processes("sagemaker", job("ml.g5.12xlarge")) == 4  # auto: torchrun over its 4 GPUs
    assert training_processes("sagemaker", job("ml.g5.12xlarge", 2)) == 8
    assert training_processes("sagemaker", job("ml.g5.12xlarge", distribution="none")) == 1
    assert training_processes("sagemaker", job("ml.c5.4xlarge", 3)) == 3  # CPU instances: one process each
    check_distribution("batch_kl", "sagemaker", job("ml.p4d.24xlarge"))  # torchrun: fine
    check_distribution("mnrl", "sagemaker", job("ml.p4d.24xlarge", distribution="smddp"))  # the Trainer's job
    with pytest.raises(ValueError, match="set sagemaker_training's distribution to torch_distributed"):
        check_distribution("batch_kl", "sagemaker", job("ml.p4d.24xlarge", distribution="smddp"))


def test_a_local_gpu_reads_at_its_listed_rate_or_the_fastest_with_a_note(monkeypatch):
    import torch

    from finetune_assets.stages.training.trained_model import local_training_device

    rates = {"cpu": 16.0, "T4": 150.0, "A10G": 350.0, "L4": 250.0}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert local_training_device(rates) == ("cpu", "")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "NVIDIA L4")
    assert local_training_device(rates) == ("L4", "")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "NVIDIA H100 80GB HBM3")
    assert local_training_device(rates) == ("A10G", "NVIDIA H100 80GB HBM3 is not in the price table, read at the "
                                                    "A10G rate")
