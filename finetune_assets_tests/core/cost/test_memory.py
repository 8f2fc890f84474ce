"""The memory check of the cost estimate: peak per stage from the sample size, and a refusal naming the setting."""
import pytest

from finetune_assets.core.cost.memory import STAGES, StageMemory, estimate_memory

TOY = (StageMemory("mined_negatives", 1000, 100), StageMemory("evaluation_report", 900, 120))


def test_the_peak_is_the_highest_stage_at_that_sample_size():
    small = estimate_memory(1000, 20_000, stages=TOY)
    assert (small.stage, small.peak_mib) == ("mined_negatives", 1100) and small.fits
    large = estimate_memory(100_000, 20_000, stages=TOY)
    assert (large.stage, large.peak_mib) == ("evaluation_report", 900 + 12_000) and large.fits


def test_a_sample_that_would_not_fit_is_refused_with_the_largest_that_would():
    estimate = estimate_memory(200_000, 16_384, stages=TOY)
    assert not estimate.fits
    # 90% of 16 GiB = 14,745.6 MiB; evaluation_report: (14,745.6 - 900) / 120 per 1,000 = 115,380 documents.
    assert estimate.largest_sample() == 115_380
    message = estimate.refusal()
    assert "200,000 documents" in message and "24.3 GiB" in message and "evaluation_report" in message
    assert "16.0 GiB free" in message and "raw_corpus max_documents to 115,380" in message
    assert estimate_memory(115_380, 16_384, stages=TOY).fits and not estimate_memory(115_381, 16_384, stages=TOY).fits
    tiny = estimate_memory(10, 1024, stages=TOY)  # not even the models fit
    assert tiny.largest_sample() == 0 and "larger machine" in tiny.refusal()
    assert estimate_memory(2000, 20_000, stages=TOY).refusal() is None
    with pytest.raises(ValueError):
        estimate_memory(-1, 1000)


def test_the_measured_table_covers_every_stage_that_holds_the_sample():
    assert {s.stage for s in STAGES} == {"mined_negatives", "evaluation_report"}
    assert all(s.fixed_mib > 0 and s.per_thousand_documents_mib > 0 for s in STAGES)


def test_each_line_lies_above_every_peak_the_scaling_runs_measured():
    import json
    from pathlib import Path

    results = Path(__file__).parents[3] / "benchmarks" / "results"
    measured = 0
    # the runs with the encoders releasing freed memory, mined_negatives with the four-signal teacher, and the
    # stages with bge-small-en as the base model
    for name in ("scaling-2026-12-05/memory-release.json", "scaling-2026-12-05/stages-32k.json",
                 "scaling-2026-12-05/mined-negatives-four-signals.json",
                 "bge-small-base-2026-12-06/scaling-bge-small-2000.json"):
        for size, stages in json.loads((results / name).read_text())["sizes"].items():
            for stage in STAGES:
                if stage.stage in stages:
                    assert stage.peak_mib(int(size)) >= stages[stage.stage]["peak_rss_mib"], (stage.stage, size)
                    measured += 1
    # two stages at 2,000, 8,000 and 32,000 documents, mined_negatives again at 2,000 and 8,000, both at 2,000 with bge
    assert measured == 10


def test_the_training_step_figures_are_the_scaling_runs_peaks():
    import json
    from pathlib import Path

    from finetune_assets.core.cost.memory import STEP_MIB

    results = Path(__file__).parents[3] / "benchmarks" / "results"
    minilm = {(4, False, False): ("scaling-2026-12-05/stages-32k.json", "32000"),
              (4, True, False): ("scaling-2026-12-05/stages-100k.json", "100000"),
              (4, False, True): ("scaling-2026-12-05/trained-model-default-100k.json", "100000"),
              (4, True, True): ("scaling-2026-12-05/trained-model-attention-dropout0-checkpointing-32k.json", "32000")}
    bge = {(4, False, True): ("bge-small-base-2026-12-06/scaling-bge-small-2000.json", "2000"),
           (2, False, True): ("dense-2-candidates-2026-12-07/scaling-2-candidates-2000.json", "2000")}
    assert set(STEP_MIB) == {"local:all-minilm-l6-v2", "local:bge-small-en"}
    for base_model, runs in (("local:all-MiniLM-L6-v2", minilm), ("local:bge-small-en", bge)):
        assert set(runs) == set(STEP_MIB[base_model.lower()])
        for (candidates, checkpointing, attention_off), (name, size) in runs.items():
            run = json.loads((results / name).read_text())
            # Runs before the report named its base model: MiniLM's were the default of their day, bge-small-en's
            # folder README says it set FINETUNE_BASE_MODEL.
            assert run.get("base_model", base_model) == base_model
            assert run["model_type"] == "dense" and run["gradient_checkpointing"] is checkpointing
            # Runs before attention_dropout existed trained with BERT's own 0.1 and do not name it.
            assert (run.get("attention_dropout") == 0) is attention_off
            # Runs before the report recorded candidates trained with the table's of their day (their folder READMEs).
            assert run.get("candidates_per_query", candidates) == candidates
            assert STEP_MIB[base_model.lower()][(candidates, checkpointing, attention_off)] == \
                run["sizes"][size]["trained_model"]["peak_rss_mib"]


def test_a_training_step_that_would_not_fit_names_what_lowers_it():
    from finetune_assets.core.cost.memory import STEP_MIB, training_step_warning

    minilm = "local:all-MiniLM-L6-v2"
    kept = STEP_MIB[minilm.lower()][(4, False, False)] / 1024
    message = training_step_warning(minilm, 4, False, False, 8192)  # BERT's attention dropout, 8 GiB free
    assert f"step of {minilm} took about {kept:.1f} GiB" in message and "8.0 GiB free" in message
    assert "attention_dropout: 0 (about" in message and "gradient_checkpointing: true (about 3.5 GiB" in message
    assert training_step_warning(minilm, 4, True, False, 8192) is None
    assert training_step_warning(minilm, 4, False, False, 24_000) is None
    assert training_step_warning(minilm, 4, False, True, 8192) is None  # attention dropout 0 fits 8 GiB
    # Only what fits is named: with 5 GiB free, checkpointing (3.5 GiB) but not attention dropout 0 alone.
    five = training_step_warning(minilm, 4, False, False, 5120)
    assert "gradient_checkpointing: true" in five and "attention_dropout" not in five
    # Where only both together fit (3.1 GiB against 3.5 GiB for checkpointing alone), both are named.
    both = training_step_warning(minilm, 4, False, False, 3700)
    assert "attention_dropout: 0 and gradient_checkpointing: true (about 3.1 GiB)" in both
    # Where even the leanest step would not fit, the advice is a smaller step or a larger machine.
    small = training_step_warning(minilm, 4, False, False, 2000)
    assert "gradient_checkpointing" not in small and "larger machine" in small
    assert "larger machine" in training_step_warning(minilm, 4, True, True, 2000)
    # bge-small-en's step is its own (measured with attention dropout 0 only, with 4 and 2 candidates): where it
    # does not fit, the smaller pool and the lighter base model are named if their steps fit, else a smaller step.
    bge, bge_2 = STEP_MIB["local:bge-small-en"][(4, False, True)], STEP_MIB["local:bge-small-en"][(2, False, True)]
    assert bge > bge_2 > STEP_MIB[minilm.lower()][(4, False, True)]
    assert training_step_warning("local:bge-small-en", 4, False, True, bge / 0.9 + 1) is None
    heavy = training_step_warning("LOCAL:bge-small-en", 4, False, True, bge_2 / 0.9 + 1)
    assert f"step of LOCAL:bge-small-en took about {bge / 1024:.1f} GiB" in heavy
    assert f"set trained_model candidates_per_query: 2 (about {bge_2 / 1024:.1f} GiB" in heavy
    assert f"or base_model {minilm} (at most about 5.6 GiB" in heavy and "gradient_checkpointing" not in heavy
    # With 2 candidates only the lighter model is left; its step with 4 candidates bounds its step with 2.
    lighter = training_step_warning("local:bge-small-en", 2, False, True, bge_2 / 0.9 - 1)
    assert f"took about {bge_2 / 1024:.1f} GiB" in lighter and f"set base_model {minilm} (at most about 5.6" in lighter
    assert "candidates_per_query" not in lighter
    assert "larger machine" in training_step_warning("local:bge-small-en", 4, False, True, 4096)
    assert training_step_warning("local:bge-small-en", 3, False, True, 1000) is None  # 3 candidates: not measured
    # Not measured: another base model, and bge-small-en with BERT's own attention dropout.
    assert training_step_warning("/models/mine", 4, False, False, 1000) is None
    assert training_step_warning("local:bge-small-en", 4, False, False, 1000) is None


def test_the_run_warns_of_the_training_step_only_where_it_was_measured():
    from finetune_assets.resources.base_model import BaseModelResource
    from finetune_assets.stages.corpus.cost_estimate import planned_training, run_configs, training_memory_warning

    def warning(model_type="dense", base_model="", free=8192, **training):
        configs = run_configs({"ops": {"trained_model": {"config": training}}} if training else None)
        hp = planned_training(configs, BaseModelResource(model_type=model_type, base_model=base_model), 2000)[1]
        return training_memory_warning(hp, free)

    # The dense batch_kl default (bge-small-en, 2 candidates, attention dropout 0) fits 8 GiB; on 7.5 GiB MiniLM's
    # step is named; with 4 candidates it does not fit 8 GiB, and 2 candidates are named.
    assert warning() is None and "base_model local:all-MiniLM-L6-v2" in warning(free=7680)
    assert "candidates_per_query: 2" in warning(candidates_per_query=4)
    minilm = "local:all-MiniLM-L6-v2"
    assert warning(base_model=minilm, candidates_per_query=4) is None  # all-MiniLM-L6-v2's step fits 8 GiB
    assert "attention_dropout: 0" in warning(base_model=minilm, attention_dropout=0.1, candidates_per_query=4)
    assert warning(base_model=minilm, attention_dropout=0.1, gradient_checkpointing=True, candidates_per_query=4) is None
    assert warning(base_model=minilm, attention_dropout=0.1, free=1000) is None  # its 2-candidate step: not measured
    assert warning("sparse") is None  # not measured
    assert warning(batch_size=64) is None  # another step shape
