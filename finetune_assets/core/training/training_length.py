"""How many steps a training run takes: passes over the rows it has, capped by max_steps and by a budget of
minutes on the device that trains, converted to steps at that device's rows per second."""
from __future__ import annotations

import math
from dataclasses import dataclass

COUNTS_FILE = "counts.json"  # mined_negatives' rows written and training pairs available: how many max_rows left out
LIMITS = ("rows", "max_steps", "budget")  # what stopped the run: the epochs over the rows, the step cap, the budget


@dataclass(frozen=True)
class TrainingLength:
    steps: int
    batch_size: int
    limited_by: str                      # one of LIMITS
    rows_per_second: float | None = None  # the training device's rate, when known (a budget needs one)
    rate_source: str = ""                 # where that rate comes from, for the log and the cost estimate
    processes: int = 1                    # data-parallel processes, each reading batch_size rows a step

    @property
    def rows(self) -> int:
        """Rows read, with repeats when the epochs exceed 1."""
        return self.steps * self.batch_size * self.processes

    @property
    def minutes(self) -> float | None:
        """Expected training time at rows_per_second (None when no rate is known)."""
        return self.rows / self.rows_per_second / 60 if self.rows_per_second else None

    def describe(self) -> str:
        reason = {"rows": "the epochs over the rows", "max_steps": "max_steps",
                  "budget": "training_budget_minutes"}[self.limited_by]
        batch = f"{self.processes} processes x {self.batch_size}" if self.processes > 1 else str(self.batch_size)
        text = f"{self.steps:,} steps of {batch} rows, set by {reason}"
        if self.minutes is not None:
            text += f"; about {self.minutes:,.1f} min at {self.rows_per_second:,.1f} rows/s ({self.rate_source})"
        return text


def training_length(rows: int, *, batch_size: int, epochs: float, max_steps: int = 0,
                    budget_minutes: float | None = None, rows_per_second: float | None = None,
                    rate_source: str = "", processes: int = 1) -> TrainingLength:
    """Steps over `rows` training rows: `epochs` passes, at most `max_steps` (0 = no cap) and, with a budget, at
    most the steps that fit `budget_minutes` at `rows_per_second` (which, without a budget, only dates the run).
    A step reads `batch_size` rows in each of `processes` data-parallel processes (torchrun's, as the entry point
    runs batch_kl), and `rows_per_second` is the rate of all of them together."""
    if batch_size < 1 or epochs <= 0 or processes < 1:
        raise ValueError(f"batch_size and processes must be >= 1 and epochs > 0, got {batch_size}, {processes} and "
                         f"{epochs}")
    step_rows = batch_size * processes
    steps, limited_by = math.ceil(math.ceil(rows / step_rows) * epochs), "rows"
    if max_steps > 0 and max_steps < steps:
        steps, limited_by = max_steps, "max_steps"
    if budget_minutes is not None:
        if budget_minutes <= 0 or not rows_per_second or rows_per_second <= 0:
            raise ValueError(f"a training budget needs minutes > 0 and a rate in rows per second > 0, got "
                             f"{budget_minutes} min at {rows_per_second} rows/s")
        budget_steps = math.floor(budget_minutes * 60 * rows_per_second / step_rows)
        if budget_steps < 1:
            raise ValueError(f"training_budget_minutes {budget_minutes} is less than one step of {step_rows} rows "
                             f"at {rows_per_second:g} rows/s ({rate_source or 'the given rate'}): raise the budget")
        if budget_steps < steps:
            steps, limited_by = budget_steps, "budget"
    if steps < 1:
        raise ValueError(f"training would run 0 steps ({rows} rows, batch_size {batch_size}, epochs {epochs}): add "
                         "training rows")
    return TrainingLength(steps, batch_size, limited_by, rows_per_second, rate_source, processes)
