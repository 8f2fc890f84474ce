"""trained_model: which loss a mined_negatives folder leads to."""
import pytest


def test_a_mined_negatives_folder_with_the_old_full_matrix_is_refused(tmp_path):
    from finetune_assets.stages.training.trained_model import LEGACY_SCORES_FILE, chosen_loss

    (tmp_path / LEGACY_SCORES_FILE).write_bytes(b"")
    for loss in ("auto", "batch_kl"):
        with pytest.raises(ValueError, match="re-materialize mined_negatives"):
            chosen_loss(loss, "sparse", tmp_path)
    assert chosen_loss("auto", "inference_free", tmp_path / "elsewhere") == "mnrl"
