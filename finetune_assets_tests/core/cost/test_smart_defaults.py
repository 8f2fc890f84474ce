"""The smart-defaults table: lookup by model type and size, filling only unset settings, and its derivation."""
import json

import pytest

from benchmarks.smart_defaults import (
    benchmark_sample_sizes,
    build_batch_kl_entries,
    build_rows,
    current_defaults,
    describe_batch_kl_run,
    describe_run,
    of_one_base_model,
    to_toml,
)
from finetune_assets.core.cost.smart_defaults import (
    SETTINGS,
    batch_kl_lookup,
    load_batch_kl,
    load_table,
    lookup,
    resolve,
    resolve_batch_kl,
)
from finetune_assets.core.model_types import default_base_model


def row(model_type="dense", max_documents=1000, epochs=1.0, basis="measured: test"):
    return {"model_type": model_type, "max_documents": max_documents, "epochs": epochs, "learning_rate": 2e-5,
            "batch_size": 16, "queries_per_type": 1, "num_negatives": 1, "basis": basis}


def write_table(tmp_path, rows, name="table.toml"):
    path = tmp_path / name
    path.write_text(to_toml(rows, ["test"]))
    load_table.cache_clear()
    return load_table(path)


def test_lookup_takes_the_smallest_row_covering_the_size(tmp_path):
    table = write_table(tmp_path, [row(max_documents=0, epochs=1.0), row(max_documents=200, epochs=3.0),
                                   row(max_documents=1000, epochs=2.0), row("sparse", 0, epochs=5.0)])
    assert [lookup("dense", n, table).epochs for n in (1, 200, 201, 1000, 1001, 10**7)] == [3, 3, 2, 2, 1, 1]
    assert lookup("sparse", 50, table).epochs == 5.0
    with pytest.raises(ValueError, match="no row for model type 'inference_free'"):
        lookup("inference_free", 50, table)
    with pytest.raises(ValueError, match="model_type"):
        lookup("colbert", 50, table)


def test_a_table_row_with_a_missing_field_is_named(tmp_path):
    broken = row()
    del broken["epochs"]
    path = tmp_path / "broken.toml"
    path.write_text("[[row]]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in broken.items()))
    load_table.cache_clear()
    with pytest.raises(ValueError, match=r"broken.toml, row 1: fields \['epochs'\]"):
        load_table(path)


def test_resolve_fills_only_what_was_left_unset():
    load_table.cache_clear()
    shipped = lookup("dense", 400)
    values, filled = resolve({"epochs": 3.0, "batch_size": None, "learning_rate": None}, "dense", 400)
    assert values == {"epochs": 3.0, "batch_size": shipped.batch_size, "learning_rate": shipped.learning_rate}
    assert filled == ["batch_size", "learning_rate"]
    with pytest.raises(ValueError, match="no smart default for \\['warmup'\\]"):
        resolve({"warmup": None}, "dense", 400)


def test_the_shipped_table_covers_every_model_type_and_size():
    load_table.cache_clear()
    for model_type in ("dense", "sparse", "inference_free"):
        for size in (1, 400, 5000, 10**6):
            found = lookup(model_type, size)
            assert found.epochs >= 1 and found.batch_size >= 2 and found.basis.startswith(("measured:", "rule:"))
    load_batch_kl.cache_clear()
    for model_type in ("dense", "sparse"):
        entry = batch_kl_lookup(model_type)
        assert entry.max_steps >= 1 and entry.learning_rate > 0 and entry.basis.startswith("measured:")
    values, filled = resolve_batch_kl({"epochs": 5.0, "max_steps": None}, "sparse")
    assert values == {"epochs": 5.0, "max_steps": batch_kl_lookup("sparse").max_steps} and filled == ["max_steps"]
    with pytest.raises(ValueError, match="no batch_kl default for \\['num_negatives'\\]"):
        resolve_batch_kl({"num_negatives": None}, "dense")


def report(collection, gain, model_type="dense", docs=400, config=None, effective=None):
    return {"collection": f"/data/{collection}", "settings": {"max_docs": docs, "model_type": model_type,
                                                             "run_config": {"ops": config or {}}},
            "tuned_minus_base_ndcg@10": {"mean": gain}, **({"effective_settings": effective} if effective else {})}


def test_derivation_ignores_runs_with_other_techniques_and_prefers_never_worse_settings():
    defaults = current_defaults()
    two_epochs = {"trained_model": {"config": {"epochs": 2.0}}}
    teacher = {"mined_negatives": {"config": {"teacher": "default"}}}
    assert describe_run(report("cacm", 0.5, config=teacher), defaults) is None  # a technique, not a setting
    assert describe_run({"collection": "x", "results": {}}, defaults) is None  # not a benchmark report
    # The [[row]] table (the MNRL recipe) is measured on one base model per type: the default's where it has runs,
    # else the base model with the most runs, which every row then names. A run that recorded none tuned the
    # default of its day (all-MiniLM-L6-v2 for dense).
    minilm = describe_run(report("cacm", 0.5), defaults)
    assert minilm["base_model"] == "local:all-minilm-l6-v2" and minilm["gain"] == 0.5
    bge_report = report("cacm", 0.1)
    bge_report["settings"]["base_model"] = "local:bge-small-en"
    bge = describe_run(bge_report, defaults)
    assert of_one_base_model([minilm, bge, minilm]) == ([bge], {})
    assert of_one_base_model([minilm]) == ([minilm], {"dense": "local:all-minilm-l6-v2"})
    noted = build_rows([minilm], {"dense": "local:all-minilm-l6-v2"})
    assert noted and all("measured on local:all-minilm-l6-v2: the MNRL recipe has no run of the dense default"
                         in row["basis"] for row in noted)
    runs = [describe_run(r, defaults) for r in [
        report("cacm", 0.03), report("cranfield", 0.00),
        report("cacm", 0.08, config=two_epochs), report("cranfield", -0.01, config=two_epochs),
        report("cacm", 0.20, config={"trained_model": {"config": {"learning_rate": 1e-4}}}),  # one collection only
    ]]
    rows = build_rows(runs)
    dense = [r for r in rows if r["model_type"] == "dense"]
    measured = [r for r in dense if r["basis"].startswith("measured")]
    # 2 epochs has the higher mean gain (+0.035 vs +0.015) but loses on cranfield; 1e-4 was not run on both
    assert len(measured) == 1 and measured[0]["epochs"] == 1.0 and measured[0]["learning_rate"] == 2e-5
    assert measured[0]["max_documents"] == 2000 and "cacm +0.0300, cranfield +0.0000" in measured[0]["basis"]
    assert [r["max_documents"] for r in dense] == [200, 2000, 0]
    assert {r["model_type"] for r in rows} == {"dense", "sparse", "inference_free"}  # others copy dense, saying so
    assert all(r["basis"].startswith("rule: sparse not benchmarked") for r in rows if r["model_type"] == "sparse")


def test_recorded_effective_settings_win_over_the_run_config():
    effective = {"epochs": 2.0, "learning_rate": 3e-5, "batch_size": 32, "queries_per_type": 2, "num_negatives": 0}
    run = describe_run(report("cacm", 0.01, effective=effective), current_defaults())
    assert dict(run["settings"]) == effective and [name for name, _ in run["settings"]] == list(SETTINGS)


def test_batch_kl_runs_do_not_feed_the_table():
    effective = {"epochs": 1.0, "learning_rate": 5e-5, "batch_size": 32, "queries_per_type": 1, "num_negatives": 1}
    assert describe_run(report("cacm", 0.05, effective={**effective, "loss": "batch_kl"}), current_defaults()) is None
    assert describe_run(report("cacm", 0.01, effective={**effective, "loss": "mnrl"}), current_defaults())["gain"] == 0.01


THREE_SIGNALS = "hybrid (BM25 0.3 + base model 0.4 + local:splade-tiny 0.3, z-score)"
# The default teacher: BM25, the base model, and the packaged models of all-MiniLM-L6-v2, SPLADE-tiny and
# bge-small-en that the base model is not.
FOUR_SIGNALS = "hybrid (BM25 0.2 + base model 0.2 + local:all-MiniLM-L6-v2 0.3 + local:bge-small-en 0.3, z-score)"
DENSE_FOUR_SIGNALS = "hybrid (BM25 0.2 + base model 0.3 + local:splade-tiny 0.2 + local:all-MiniLM-L6-v2 0.3, z-score)"


def batch_kl_report(collection, gain, model_type="dense", lr=5e-5, teacher=None, config=None, **extra):
    teacher = teacher or (FOUR_SIGNALS if model_type == "sparse" else DENSE_FOUR_SIGNALS)
    sizes = benchmark_sample_sizes()
    effective = {"epochs": 2.0, "learning_rate": lr, "batch_size": 32, "max_steps": 160, "max_seq_length": 128,
                 "queries_per_type": 1,
                 "num_negatives": 1, "loss": "batch_kl", "teacher": teacher}
    run = report(collection, gain, model_type=model_type, docs=sizes["max_docs"], config=config, effective=effective)
    run["settings"].update(corpus_docs=sizes["corpus_docs"], base_model=default_base_model(model_type))
    return {**run, **extra}


def test_batch_kl_entries_come_from_runs_with_todays_teacher_and_sample_sizes(tmp_path):
    defaults, sizes = current_defaults(), benchmark_sample_sizes()
    higher_lr = {"trained_model": {"config": {"learning_rate": 2e-4}}}
    two_signal_config = {"mined_negatives": {"config": {"teacher_companion": ""}}}
    ignored = [batch_kl_report("cacm", 0.9, teacher="hybrid (BM25 0.5 + base model 0.5, z-score)"),  # two signals
               batch_kl_report("cacm", 0.9, superseded_by="newer.json"),
               batch_kl_report("cacm", 0.9, config=two_signal_config),
               {**batch_kl_report("cacm", 0.9), "settings": {**batch_kl_report("cacm", 0.9)["settings"],
                                                             "max_docs": sizes["max_docs"] * 3}}]
    ignored.append(batch_kl_report("cacm", 0.9, "sparse", teacher=THREE_SIGNALS))  # the defaults have four
    ignored.append(batch_kl_report("cacm", 0.9, teacher=THREE_SIGNALS))
    other_base = batch_kl_report("cacm", 0.9)  # the default recipe on another base model
    ignored.append({**other_base, "settings": {**other_base["settings"], "base_model": "local:all-MiniLM-L6-v2"}})
    assert [describe_batch_kl_run(r, defaults, sizes) for r in ignored] == [None] * 7
    # Spelling the default companions out is still the default teacher.
    spelled = {"mined_negatives": {"config": {"teacher_companion": "local:all-MiniLM-L6-v2, local:bge-small-en"}}}
    assert describe_batch_kl_run(batch_kl_report("cacm", 0.9, "sparse", config=spelled), defaults, sizes)
    assert describe_run(batch_kl_report("cacm", 0.9), defaults) is None  # nor do they feed the [[row]] table
    runs = [describe_batch_kl_run(r, defaults, sizes) for r in [
        batch_kl_report("cacm", 0.04), batch_kl_report("cranfield", 0.02),
        batch_kl_report("cacm", 0.09, lr=2e-4, config=higher_lr), batch_kl_report("cranfield", -0.01, lr=2e-4),
        batch_kl_report("cacm", 0.02, "sparse"), batch_kl_report("cranfield", 0.01, "sparse"),
        batch_kl_report("cacm", 0.03, "sparse", lr=2e-4), batch_kl_report("cranfield", 0.02, "sparse", lr=2e-4)]]
    entries = {e["model_type"]: e for e in build_batch_kl_entries(runs)}
    # dense: 2e-4 has the higher mean gain (+0.040 vs +0.030) but is worse than base on cranfield
    assert entries["dense"]["learning_rate"] == 5e-5 and "cacm +0.0400, cranfield +0.0200" in entries["dense"]["basis"]
    assert entries["sparse"]["learning_rate"] == 2e-4 and entries["sparse"]["max_steps"] == 160
    table = tmp_path / "table.toml"
    table.write_text(to_toml([row()], ["test"], list(entries.values())))
    load_batch_kl.cache_clear()
    assert batch_kl_lookup("sparse", table).learning_rate == 2e-4
    with pytest.raises(SystemExit, match="no batch_kl run of a sparse model"):
        build_batch_kl_entries([r for r in runs if r["model_type"] == "dense"])


def test_summary_labels_each_run_by_what_it_changed(tmp_path):
    from benchmarks.summary import row, to_markdown

    def full(collection, gain, config=None, corpus_docs=None):
        base = report(collection, gain, config=config)
        base["settings"]["corpus_docs"] = corpus_docs
        return {**base, "judged_queries": 52, "timings_s": {"pipeline_total": 600.0},
                "results": {name: {"ndcg@10": 0.4, "recall@100": 0.7} for name in ("bm25", "base", "tuned")},
                "tuned_minus_base_ndcg@10": {"mean": gain, "ci95": [gain - 0.01, gain + 0.01]}}

    defaults = current_defaults()
    plain = row(tmp_path / "a.json", full("cacm", 0.02), defaults)
    titles = row(tmp_path / "b.json", full("cacm", 0.03, {"training_pairs": {"config": {"title_queries": True}},
                                                           "trained_model": {"config": {"learning_rate": 1e-4}}},
                                           corpus_docs=1200), defaults)
    # Runs that recorded no loss trained with mnrl, before span queries and batch_kl were the defaults.
    assert plain["changed"] == "loss=mnrl (no span queries)"
    assert titles["changed"] == "loss=mnrl (no span queries), title_queries=true, learning_rate=0.0001, corpus_docs=1200"
    batch_kl = full("cacm", 0.05)
    batch_kl["effective_settings"] = {"epochs": 2.0, "learning_rate": 5e-5, "batch_size": 32, "queries_per_type": 1,
                                      "num_negatives": 1, "loss": "batch_kl"}
    assert row(tmp_path / "c.json", batch_kl, defaults)["changed"] == "defaults"
    assert "| cacm (52) | dense | loss=mnrl (no span queries), title_queries=true" in to_markdown([plain, titles])


def test_batch_kl_training_length_is_a_setting_and_earlier_runs_count_at_128_tokens():
    defaults, sizes = current_defaults(), benchmark_sample_sizes()
    longer = {"trained_model": {"config": {"max_seq_length": 256}}}
    earlier = batch_kl_report("cranfield", 0.02)
    del earlier["effective_settings"]["max_seq_length"]  # written before the benchmark recorded it
    unrecorded_256 = batch_kl_report("cacm", 0.05, config=longer)
    del unrecorded_256["effective_settings"]["max_seq_length"]
    runs = [describe_batch_kl_run(r, defaults, sizes) for r in [
        earlier, batch_kl_report("cacm", 0.04),
        unrecorded_256, {**batch_kl_report("cranfield", 0.03, config=longer), "effective_settings": {
            **batch_kl_report("cranfield", 0.03)["effective_settings"], "max_seq_length": 256}},
        batch_kl_report("cacm", 0.02, "sparse"), batch_kl_report("cranfield", 0.01, "sparse")]]
    assert dict(runs[0]["settings"])["max_seq_length"] == 128 and dict(runs[2]["settings"])["max_seq_length"] == 256
    entries = {e["model_type"]: e for e in build_batch_kl_entries(runs)}
    assert entries["dense"]["max_seq_length"] == 256 and "cacm +0.0500, cranfield +0.0300" in entries["dense"]["basis"]
    assert entries["sparse"]["max_seq_length"] == 128


def test_teacher_candidates_are_a_setting_and_earlier_runs_count_at_4():
    defaults, sizes = current_defaults(), benchmark_sample_sizes()
    eight = {"trained_model": {"config": {"candidates_per_query": 8}}}
    unrecorded_8 = batch_kl_report("cacm", 0.04, "sparse", config=eight)  # set in its config, not yet recorded
    runs = [describe_batch_kl_run(r, defaults, sizes) for r in [
        batch_kl_report("cacm", 0.04), batch_kl_report("cranfield", 0.03),
        batch_kl_report("cacm", 0.02, "sparse"), batch_kl_report("cranfield", 0.01, "sparse"),
        unrecorded_8, {**batch_kl_report("cranfield", 0.03, "sparse"), "effective_settings": {
            **batch_kl_report("cranfield", 0.03, "sparse")["effective_settings"], "candidates_per_query": 8}},
        batch_kl_report("cranfield", 0.09, config=eight)]]  # dense with 8: never run on cacm, so not a candidate
    assert dict(runs[0]["settings"])["candidates_per_query"] == 4
    assert dict(runs[4]["settings"])["candidates_per_query"] == 8
    entries = {e["model_type"]: e for e in build_batch_kl_entries(runs)}
    assert entries["sparse"]["candidates_per_query"] == 8 and "cacm +0.0400, cranfield +0.0300" in entries["sparse"]["basis"]
    assert entries["dense"]["candidates_per_query"] == 4


def test_a_setting_run_twice_on_a_collection_counts_with_its_mean_gain():
    defaults, sizes = current_defaults(), benchmark_sample_sizes()
    higher_lr = {"trained_model": {"config": {"learning_rate": 2e-4}}}
    runs = [describe_batch_kl_run(r, defaults, sizes) for r in [
        batch_kl_report("cacm", 0.02, "sparse"), batch_kl_report("cranfield", 0.00, "sparse"),
        batch_kl_report("cranfield", 0.04, "sparse"),  # a rerun: the setting's cranfield gain is +0.02
        batch_kl_report("cacm", 0.02, "sparse", lr=2e-4, config=higher_lr),
        batch_kl_report("cranfield", 0.03, "sparse", lr=2e-4, config=higher_lr),
        batch_kl_report("cacm", 0.01, "dense"), batch_kl_report("cranfield", 0.01, "dense")]]
    sparse = {e["model_type"]: e for e in build_batch_kl_entries(runs)}["sparse"]
    # mean gains: 2e-4 +0.025 beats the repeated setting's +0.020 (its later run alone would have given +0.030)
    assert sparse["learning_rate"] == 2e-4
    del runs[3:5]  # without 2e-4 the repeated setting wins, and its basis says the figure is a mean
    sparse = {e["model_type"]: e for e in build_batch_kl_entries(runs)}["sparse"]
    assert sparse["learning_rate"] == 5e-5 and "cacm +0.0200, cranfield +0.0200 (mean of 2 runs)" in sparse["basis"]


def test_fewer_steps_win_within_the_steps_margin_of_the_best_mean_gain():
    from benchmarks.smart_defaults import STEPS_MARGIN

    defaults, sizes = current_defaults(), benchmark_sample_sizes()

    def steps_run(collection, gain, steps, model_type="sparse"):
        config = {"trained_model": {"config": {"max_steps": steps}}}
        run = batch_kl_report(collection, gain, model_type, config=config)
        run["effective_settings"]["max_steps"] = steps
        return describe_batch_kl_run(run, defaults, sizes)

    dense = [steps_run("cacm", 0.01, 160, "dense"), steps_run("cranfield", 0.01, 160, "dense")]
    full = [steps_run("cacm", 0.040, 160), steps_run("cranfield", 0.030, 160)]
    close = [steps_run("cacm", 0.040 - STEPS_MARGIN / 2, 80), steps_run("cranfield", 0.030, 80)]
    entries = {e["model_type"]: e for e in build_batch_kl_entries(dense + full + close)}
    assert entries["sparse"]["max_steps"] == 80  # half the training, mean gain within the margin
    far = [steps_run("cacm", 0.040 - 3 * STEPS_MARGIN, 80), steps_run("cranfield", 0.030, 80)]
    assert {e["model_type"]: e for e in build_batch_kl_entries(dense + full + far)}["sparse"]["max_steps"] == 160
    worse_somewhere = [steps_run("cacm", 0.045, 80), steps_run("cranfield", -0.001, 80)]
    entries = {e["model_type"]: e for e in build_batch_kl_entries(dense + full + worse_somewhere)}
    assert entries["sparse"]["max_steps"] == 160  # never worse than base comes before the margin


def test_fewer_teacher_candidates_win_within_the_margin_as_fewer_pooled_documents():
    from benchmarks.smart_defaults import STEPS_MARGIN

    defaults, sizes = current_defaults(), benchmark_sample_sizes()

    def candidates_run(collection, gain, candidates, steps=160, model_type="dense"):
        config = {"trained_model": {"config": {"candidates_per_query": candidates, "max_steps": steps}}}
        run = batch_kl_report(collection, gain, model_type, config=config)
        run["effective_settings"].update(candidates_per_query=candidates, max_steps=steps)
        return describe_batch_kl_run(run, defaults, sizes)

    sparse = [candidates_run("cacm", 0.01, 4, model_type="sparse"), candidates_run("cranfield", 0.01, 4, model_type="sparse")]
    four = [candidates_run("cacm", 0.040, 4), candidates_run("cranfield", 0.030, 4)]
    two = [candidates_run("cacm", 0.040 - STEPS_MARGIN / 2, 2), candidates_run("cranfield", 0.030, 2)]
    dense = {e["model_type"]: e for e in build_batch_kl_entries(sparse + four + two)}["dense"]
    assert dense["candidates_per_query"] == 2  # half the pooled documents, mean gain within the margin
    assert "160 steps x 4 candidates: cacm +0.0400, cranfield +0.0300" in dense["basis"]
    # 100 steps with 4 candidates pool more documents (12,800) than 160 steps with 2 (10,240): fewer steps alone lose
    fewer_steps = [candidates_run("cacm", 0.040 - STEPS_MARGIN / 2, 4, 100), candidates_run("cranfield", 0.030, 4, 100)]
    dense = {e["model_type"]: e for e in build_batch_kl_entries(sparse + four + two + fewer_steps)}["dense"]
    assert (dense["candidates_per_query"], dense["max_steps"]) == (2, 160)
    far = [candidates_run("cacm", 0.040 - 3 * STEPS_MARGIN, 2), candidates_run("cranfield", 0.030, 2)]
    assert {e["model_type"]: e for e in build_batch_kl_entries(sparse + four + far)}["dense"]["candidates_per_query"] == 4


def test_a_run_with_another_seed_is_a_repeat_of_its_setting():
    defaults, sizes = current_defaults(), benchmark_sample_sizes()
    seed_1 = {"trained_model": {"config": {"seed": 1}}}
    other_option = {"trained_model": {"config": {"teacher_temperature": 2.0}}}
    runs = [describe_batch_kl_run(r, defaults, sizes) for r in [
        batch_kl_report("cacm", 0.02, "sparse"), batch_kl_report("cranfield", 0.04, "sparse"),
        batch_kl_report("cranfield", 0.00, "sparse", config=seed_1),
        batch_kl_report("cacm", 0.01, "dense"), batch_kl_report("cranfield", 0.01, "dense")]]
    assert describe_batch_kl_run(batch_kl_report("cranfield", 0.09, "sparse", config=other_option),
                                 defaults, sizes) is None  # a technique outside the table's columns
    sparse = {e["model_type"]: e for e in build_batch_kl_entries(runs)}["sparse"]
    assert "cacm +0.0200, cranfield +0.0200 (mean of 2 runs)" in sparse["basis"]


def test_a_soup_run_does_not_pick_the_settings_of_one_model():
    defaults, sizes = current_defaults(), benchmark_sample_sizes()
    soup = batch_kl_report("cranfield", 0.05, "sparse")
    soup["effective_settings"]["soup_size"] = 4
    assert describe_batch_kl_run(soup, defaults, sizes) is None
    single = batch_kl_report("cranfield", 0.03, "sparse", config={"trained_model": {"config": {"soup_size": 1}}})
    single["effective_settings"]["soup_size"] = 1
    assert describe_batch_kl_run(single, defaults, sizes)["gain"] == 0.03


def test_experimental_options_count_alike_set_directly_by_earlier_runs_or_through_the_mapping():
    from benchmarks.smart_defaults import settings_and_techniques

    defaults, sizes = current_defaults(), benchmark_sample_sizes()
    for at_default in ({"trained_model": {"config": {"experimental": {"average_weights_from": 0.0, "dropout": None}}}},
                       {"mined_negatives": {"config": {"experimental": {"roundtrip_top_k": 0}}}},
                       {"mined_negatives": {"config": {"roundtrip_rerank_depth": 10}}}):  # before the mapping
        assert describe_batch_kl_run(batch_kl_report("cacm", 0.02, config=at_default), defaults, sizes), at_default
    for option in ({"trained_model": {"config": {"experimental": {"teacher_temperature": 2.0}}}},
                   {"mined_negatives": {"config": {"experimental": {"roundtrip_top_k": 5}}}}):
        assert describe_batch_kl_run(batch_kl_report("cacm", 0.09, config=option), defaults, sizes) is None, option
    _, techniques = settings_and_techniques(report("cacm", 0.01, config={
        "trained_model": {"config": {"experimental": {"untie_output_embeddings": True}}}}), defaults)
    assert techniques == {"trained_model.untie_output_embeddings": True}  # labelled as before the mapping


def test_the_shipped_table_is_what_the_generator_writes_from_the_results(tmp_path):
    from pathlib import Path

    from benchmarks.smart_defaults import main
    from finetune_assets.core.cost.smart_defaults import TABLE

    results = sorted(str(p) for p in (Path(__file__).parents[3] / "benchmarks" / "results").glob("*.json"))
    assert main([*results, "--out", str(tmp_path / "table.toml")]) == 0
    assert (tmp_path / "table.toml").read_text() == TABLE.read_text()


def test_the_generator_refuses_results_of_a_check_collection(tmp_path, capsys):
    import json

    import pytest

    from benchmarks.smart_defaults import main

    result = report("cacm", 0.02)
    result["collection"] = "../shared/ir-data/med"
    path = tmp_path / "med-sparse.json"
    path.write_text(json.dumps(result))
    with pytest.raises(SystemExit) as stopped:
        main([str(path), "--out", str(tmp_path / "table.toml")])
    assert stopped.value.code == 2
    assert "med-sparse.json" in capsys.readouterr().err and not (tmp_path / "table.toml").exists()
