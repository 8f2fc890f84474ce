"""How many steps training takes: epochs over the rows, the step cap, and a budget of minutes."""
import pytest

from finetune_assets.core.training.training_length import training_length


def test_the_rows_the_cap_or_the_budget_sets_the_steps():
    rows = training_length(1000, batch_size=32, epochs=2.0)
    assert (rows.steps, rows.limited_by, rows.minutes) == (64, "rows", None)  # 2 x ceil(1000 / 32)
    capped = training_length(1000, batch_size=32, epochs=2.0, max_steps=50)
    assert (capped.steps, capped.limited_by, capped.rows) == (50, "max_steps", 1600)
    # 1 minute at 16 rows/s = 960 rows = 30 steps of 32, under both the rows' 64 and the cap's 50.
    budget = training_length(1000, batch_size=32, epochs=2.0, max_steps=50, budget_minutes=1.0, rows_per_second=16.0,
                             rate_source="test rate")
    assert (budget.steps, budget.limited_by) == (30, "budget")
    assert budget.minutes == pytest.approx(1.0)
    assert "30 steps of 32 rows, set by training_budget_minutes" in budget.describe() and "test rate" in budget.describe()
    roomy = training_length(1000, batch_size=32, epochs=2.0, budget_minutes=60.0, rows_per_second=16.0)
    assert (roomy.steps, roomy.limited_by) == (64, "rows")  # the data runs out first
    # Four data-parallel processes read 4 x 32 rows a step: an epoch takes a quarter of the steps, and a budget at
    # their joint rate a quarter too.
    parallel = training_length(1000, batch_size=32, epochs=2.0, processes=4)
    assert (parallel.steps, parallel.rows) == (16, 2048)  # 2 x ceil(1000 / 128)
    shared = training_length(10_000, batch_size=32, epochs=2.0, budget_minutes=1.0, rows_per_second=64.0, processes=4)
    assert (shared.steps, shared.limited_by, shared.minutes) == (30, "budget", 1.0)
    assert "30 steps of 4 processes x 32 rows" in shared.describe()


def test_a_budget_needs_a_rate_and_room_for_one_step():
    with pytest.raises(ValueError, match="rows per second > 0"):
        training_length(1000, batch_size=32, epochs=1.0, budget_minutes=5.0)
    with pytest.raises(ValueError, match="less than one step of 32 rows at 0.1 rows/s.*raise the budget"):
        training_length(1000, batch_size=32, epochs=1.0, budget_minutes=1.0, rows_per_second=0.1)
    with pytest.raises(ValueError, match="0 steps"):
        training_length(0, batch_size=32, epochs=1.0)
