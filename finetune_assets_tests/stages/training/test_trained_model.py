"""trained_model: which loss a mined_negatives folder leads to."""
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
