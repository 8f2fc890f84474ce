"""Weight averaging of a model soup, on small safetensors folders laid out like sentence-transformers models."""
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from finetune_assets.core.training.dense_training import Hyperparameters, TrainingOutcome
from finetune_assets.core.training.model_soup import average_weights, train_soup


def member(folder: Path, scale: float, ids=(0, 1, 2)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"encoder.weight": torch.full((2, 3), scale), "position_ids": torch.tensor(ids)},
              str(folder / "model.safetensors"))
    (folder / "query_0_Static").mkdir(exist_ok=True)
    save_file({"weights": torch.tensor([scale, -scale], dtype=torch.float16)},
              str(folder / "query_0_Static" / "model.safetensors"))
    (folder / "config.json").write_text('{"kind": "test"}')
    return folder


def test_average_of_every_weight_file_keeps_integers_dtypes_and_the_rest_of_the_folder(tmp_path):
    members = [member(tmp_path / f"m{i}", scale) for i, scale in enumerate((1.0, 2.0, 6.0))]
    average_weights(members, tmp_path / "soup")
    root = load_file(str(tmp_path / "soup" / "model.safetensors"))
    assert torch.equal(root["encoder.weight"], torch.full((2, 3), 3.0))
    assert torch.equal(root["position_ids"], torch.tensor([0, 1, 2]))
    nested = load_file(str(tmp_path / "soup" / "query_0_Static" / "model.safetensors"))["weights"]
    assert nested.dtype == torch.float16 and nested.tolist() == [3.0, -3.0]
    assert (tmp_path / "soup" / "config.json").read_text() == '{"kind": "test"}'
    # the members are left as they were
    assert torch.equal(load_file(str(members[0] / "model.safetensors"))["encoder.weight"], torch.ones(2, 3))


def test_members_that_do_not_match_are_refused_with_the_reason(tmp_path):
    first = member(tmp_path / "a", 1.0)
    other_ids = member(tmp_path / "b", 2.0, ids=(0, 1, 3))
    with pytest.raises(ValueError, match="integer tensor position_ids in model.safetensors differs"):
        average_weights([first, other_ids], tmp_path / "soup")
    wider = member(tmp_path / "c", 2.0)
    save_file({"encoder.weight": torch.ones(2, 4), "position_ids": torch.tensor([0, 1, 2])},
              str(wider / "model.safetensors"))
    with pytest.raises(ValueError, match=r"encoder.weight in model.safetensors has shapes \[\(2, 3\), \(2, 4\)\]"):
        average_weights([first, wider], tmp_path / "soup")
    fewer = member(tmp_path / "d", 2.0)
    (fewer / "query_0_Static" / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="other weight files"):
        average_weights([first, fewer], tmp_path / "soup")
    pickled = member(tmp_path / "e", 2.0)
    torch.save({}, pickled / "pytorch_model.bin")
    with pytest.raises(ValueError, match="pytorch_model.bin is a pickled checkpoint"):
        average_weights([pickled, first], tmp_path / "soup")


def fake_trainer(calls: list):
    def train(hp: Hyperparameters, model_dir: str) -> TrainingOutcome:
        calls.append((hp.seed, model_dir))
        member(Path(model_dir), float(hp.seed))
        return TrainingOutcome(model_dir=model_dir, steps=10, rows=40, train_seconds=2.0, samples_per_second=20.0,
                               final_loss=0.5 + hp.seed, loss_history=[{"step": 10, "loss": 0.5 + hp.seed}])
    return train


def test_a_soup_trains_one_member_per_seed_and_saves_their_average(tmp_path):
    calls, announced = [], []
    outcome = train_soup(fake_trainer(calls), Hyperparameters(seed=3, soup_size=3), tmp_path / "model",
                         on_member=lambda index, seed: announced.append((index, seed)))
    assert [seed for seed, _ in calls] == [3, 4, 5] and announced == [(0, 3), (1, 4), (2, 5)]
    assert all(Path(folder).parent != tmp_path / "model" for _, folder in calls)  # members train elsewhere
    weights = load_file(str(tmp_path / "model" / "model.safetensors"))["encoder.weight"]
    assert torch.equal(weights, torch.full((2, 3), 4.0))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("soup-")]  # the members are cleaned up
    assert (outcome.steps, outcome.rows, outcome.train_seconds, outcome.samples_per_second) == (30, 40, 6.0, 20.0)
    assert outcome.final_loss == pytest.approx(4.5)
    assert [h["member_seed"] for h in outcome.loss_history] == [3, 4, 5]


def test_one_member_trains_straight_into_the_model_folder(tmp_path):
    calls = []
    train_soup(fake_trainer(calls), Hyperparameters(seed=0), tmp_path / "model")
    assert calls == [(0, str(tmp_path / "model"))]
    with pytest.raises(ValueError, match=r"soup_size must be >= 1 \(1 = one model\), got 0"):
        Hyperparameters(soup_size=0)  # the asset builds these before it starts any training
