"""The cost estimate: line items, scaling with the corpus, batch vs on-demand, the price table and its errors."""
from __future__ import annotations

import datetime
import math

import pytest

from finetune_assets.core.cost.cost import (
    CHARS_PER_TOKEN_METHOD,
    TrainSettings,
    chars_per_token_counter,
    default_token_counter,
    estimate_cost,
)
from finetune_assets.core.cost.prices import PRICES_FILE, PriceTableError, base_model_id, load_prices
from finetune_assets.core.data.demo_corpus import python_docs_documents
from finetune_assets.core.jsonl import read_json
from finetune_assets.core.querygen.prompts import SYSTEM_PROMPT, build_query_prompt

NOVA_LITE = "amazon.nova-lite-v1:0"
CHARS4 = (chars_per_token_counter, CHARS_PER_TOKEN_METHOD)


@pytest.fixture(scope="module")
def documents() -> list[dict]:
    return python_docs_documents()[:120]


def estimate(documents, **options):
    return estimate_cost(documents, **{"bedrock_model_id": NOVA_LITE, "token_counter": CHARS4, **options})


def test_line_items_add_up(documents):
    result = estimate(documents)
    for item in result.items:
        assert item.usd == pytest.approx(item.quantity * item.unit_price_usd, abs=1e-3), item.name
        assert item.usd > 0, item.name
    once = [i for i in result.items if i.per == "run"]
    assert {i.group for i in once} == {"bedrock", "training"}
    assert result.total_usd == pytest.approx(sum(i.usd for i in once), abs=1e-3)
    assert result.total_usd == pytest.approx(result.group_usd("bedrock") + result.group_usd("training"), abs=1e-3)
    monthly = {i.group for i in result.items if i.per == "month"}
    assert monthly == {"realtime_endpoint", "serverless_endpoint"}  # alternatives, never in the one-time total
    serialized = result.to_dict()
    assert serialized["total_usd"] == result.total_usd and len(serialized["items"]) == len(result.items)
    markdown = result.to_markdown()
    assert all(item.name in markdown for item in result.items)
    assert f"**{result.total_usd:,.2f}**" in markdown


def test_more_documents_cost_more(documents):
    small, large = estimate(documents[:40]), estimate(documents[:120])
    for group in ("bedrock", "training"):
        assert large.group_usd(group) > small.group_usd(group), group
    # A sample standing for a bigger corpus scales the token-driven items linearly.
    scaled = estimate(documents, num_documents=10 * len(documents))
    base = estimate(documents)
    assert scaled.group_usd("bedrock") == pytest.approx(10 * base.group_usd("bedrock"), rel=1e-3)
    assert scaled.documents == 1200 and scaled.documents_counted == 120
    # Endpoint cost depends on traffic, not on the corpus.
    assert scaled.group_usd("realtime_endpoint") == base.group_usd("realtime_endpoint")


@pytest.mark.parametrize("model_id", ["amazon.nova-lite-v1:0", "anthropic.claude-3-haiku-20240307-v1:0",
                                      "us.amazon.nova-micro-v1:0", "us.amazon.nova-pro-v1:0"])
def test_batch_is_half_of_on_demand(documents, model_id):
    batch = estimate(documents, bedrock_model_id=model_id, batch=True)
    on_demand = estimate(documents, bedrock_model_id=model_id, batch=False)
    assert batch.group_usd("bedrock") == pytest.approx(on_demand.group_usd("bedrock") / 2, rel=1e-3)
    assert batch.group_usd("training") == on_demand.group_usd("training")


def test_model_without_a_batch_price_is_priced_at_on_demand_and_says_so(documents):
    model = "us.anthropic.claude-3-5-haiku-20241022-v1:0"  # the table lists no Bedrock batch price for it
    batch = estimate(documents, bedrock_model_id=model, batch=True)
    on_demand = estimate(documents, bedrock_model_id=model, batch=False)
    assert batch.group_usd("bedrock") == on_demand.group_usd("bedrock")
    assert all("upper bound" in i.note for i in batch.items if i.group == "bedrock")


def test_model_missing_from_the_table_names_the_id_and_the_file(documents):
    with pytest.raises(PriceTableError) as error:
        estimate(documents, bedrock_model_id="us.meta.llama3-70b-instruct-v1:0")
    message = str(error.value)
    assert "us.meta.llama3-70b-instruct-v1:0" in message and str(PRICES_FILE) in message
    assert "amazon.nova-lite-v1:0" in message  # what is known
    with pytest.raises(PriceTableError, match=r"ml\.x9\.huge.*prices\.toml"):
        estimate(documents, training_instance_type="ml.x9.huge")
    with pytest.raises(PriceTableError, match=r"'1500'.*prices\.toml"):
        estimate(documents, serverless_memory_mb=1500)


def test_inference_profiles_and_arns_cost_what_the_base_model_costs():
    prices = load_prices()
    base = prices.bedrock("amazon.nova-pro-v1:0")
    assert prices.bedrock("us.amazon.nova-pro-v1:0") == base
    assert prices.bedrock("arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-pro-v1:0") == base
    assert base_model_id("eu.anthropic.claude-3-haiku-20240307-v1:0") == "anthropic.claude-3-haiku-20240307-v1:0"


def test_price_table_has_its_date_region_and_sources():
    prices = load_prices()
    assert datetime.date.fromisoformat(prices.as_of) <= datetime.date.today()
    assert prices.region == "us-east-1"
    for section in ("bedrock", "sagemaker_training", "sagemaker_realtime", "sagemaker_serverless"):
        assert prices.data[section]["source_url"].startswith("https://"), section
        assert prices.data[section]["as_of"], section
    for model in prices.data["bedrock"]["models"].values():  # batch, where listed, is half of on-demand
        if "batch_input_per_1k" in model:
            assert model["batch_input_per_1k"] == pytest.approx(model["input_per_1k"] / 2)
            assert model["batch_output_per_1k"] == pytest.approx(model["output_per_1k"] / 2)


def test_a_broken_table_is_named(tmp_path):
    broken = tmp_path / "prices.toml"
    broken.write_text('as_of = "2026-01-01"\nregion = [unclosed\n')
    with pytest.raises(PriceTableError, match=str(broken)):
        load_prices(broken)
    undated = tmp_path / "undated.toml"
    undated.write_text('region = "us-east-1"\n')
    with pytest.raises(PriceTableError, match="as_of"):
        load_prices(undated)


def test_input_tokens_come_from_the_real_prompt(documents):
    seen: list[str] = []

    def words(texts):
        seen.extend(texts)
        return [len(t.split()) for t in texts]

    docs = documents[:5]
    result = estimate(docs, token_counter=(words, "words"), queries_per_type=2, max_document_chars=300)
    prompts = [build_query_prompt(d, 2, 300) for d in docs]
    assert all(p in seen for p in prompts) and SYSTEM_PROMPT in seen
    expected = sum(len(p.split()) for p in prompts) + 5 * len(SYSTEM_PROMPT.split())
    input_item = next(i for i in result.items if "input tokens" in i.name)
    assert input_item.quantity * 1000 == pytest.approx(expected)
    output_item = next(i for i in result.items if "output tokens" in i.name)
    assert output_item.quantity * 1000 == 5 * (10 + 4 * 30)  # wrapper + 4 queries of ~30 tokens
    assert result.assumptions["token count"] == "words"


def test_training_hours_follow_rows_and_throughput(documents):
    prices = load_prices()
    overhead = prices.data["sagemaker_training"]["overhead_minutes"] / 60

    def hours(**options):  # instance-hours of work: every instance bills its own start-up
        item = next(i for i in estimate(documents, **options).items if i.group == "training")
        return item.quantity - overhead * options.get("training_instance_count", 1)

    base = hours(training_rows_per_second=10.0)
    assert hours(training_rows_per_second=20.0) == pytest.approx(base / 2)
    assert hours(training_rows_per_second=10.0, train=TrainSettings(epochs=3)) == pytest.approx(3 * base)
    rows = len(documents) * 0.8 * 2  # 20% held out, a factoid and a conceptual query per document
    assert base == pytest.approx(rows / 10.0 / 3600)
    # Default throughput: more negatives make rows longer, so training takes longer.
    assert hours(train=TrainSettings(num_negatives=4)) > hours(train=TrainSettings(num_negatives=1))
    # Two instances: twice the throughput, same instance-hours of work.
    one = hours(training_instance_count=1)
    assert hours(training_instance_count=2) == pytest.approx(one, rel=1e-3)
    # bge-small-en (12 layers) trains at half all-MiniLM-L6-v2's rate (the table's relative_cost, measured on CPU);
    # a measured rate is the job's own and is not scaled.
    assert hours(train=TrainSettings(base_model="local:bge-small-en")) == pytest.approx(2 * hours(train=TrainSettings()))
    assert hours(train=TrainSettings(base_model="/models/mine")) == pytest.approx(hours(train=TrainSettings()))
    assert hours(training_rows_per_second=10.0, train=TrainSettings(base_model="local:bge-small-en")) == \
        pytest.approx(base)


def test_batch_kl_training_counts_span_queries_teacher_candidates_and_the_step_cap(documents):
    def work(train):  # rows processed, from the line item's note
        item = next(i for i in estimate(documents, training_rows_per_second=10.0, train=train).items
                    if i.group == "training")
        return float(item.note.split(" rows")[0].replace(",", ""))

    generated = len(documents) * 0.8 * 2
    uncapped = TrainSettings(loss="batch_kl", epochs=2.0, batch_size=32, span_rows=500.0)
    assert work(uncapped) == pytest.approx((generated + 500) * 2)
    assert work(TrainSettings(loss="batch_kl", epochs=2.0, batch_size=32, span_rows=500.0, max_steps=10)) == 320
    # A row carries candidates_per_query passages instead of a positive and its negatives: longer rows, slower.
    def hours(train):
        return next(i for i in estimate(documents, train=train).items if i.group == "training").quantity
    assert hours(TrainSettings(loss="batch_kl", candidates_per_query=8)) > hours(TrainSettings(loss="batch_kl"))
    assert "batch_kl" in estimate(documents, train=uncapped).assumptions["training"]


def planned(model_type: str = "dense", ops: dict | None = None, documents: int = 2000, max_seq_length: int = 256):
    """The queries per type and Hyperparameters cost_estimate prices for a run config, as the CLI and asset do."""
    from finetune_assets.resources.base_model import BaseModelResource
    from finetune_assets.stages.corpus.cost_estimate import planned_training, run_configs

    configs = run_configs({"ops": {op: {"config": config} for op, config in (ops or {}).items()}})
    base = BaseModelResource(model_type=model_type, max_seq_length=max_seq_length)
    return configs, *planned_training(configs, base, documents)


def test_the_asset_prices_batch_kl_with_the_tables_batch_kl_entry():
    from finetune_assets.core.cost.smart_defaults import batch_kl_lookup
    from finetune_assets.stages.corpus.cost_estimate import train_settings

    entry = batch_kl_lookup("dense")
    configs, queries_per_type, hp = planned("dense", max_seq_length=512)
    assert (hp.loss, hp.epochs, hp.max_steps, queries_per_type) == ("batch_kl", entry.epochs, entry.max_steps, 1)
    train = train_settings(hp, configs.training_pairs, sampled_documents=1000)
    assert train.span_rows == pytest.approx(1000 * 0.8 * configs.training_pairs.span_queries)
    assert train.max_seq_length == entry.max_seq_length  # the entry's training length, the model reading more
    configs, _, short = planned("dense", max_seq_length=64)
    assert train_settings(short, configs.training_pairs, 1000).max_seq_length == 64  # never more than the model reads
    configs, _, set_96 = planned("dense", {"trained_model": {"max_seq_length": 96}}, max_seq_length=512)
    assert train_settings(set_96, configs.training_pairs, 1000).max_seq_length == 96
    configs, _, pairs = planned("dense", {"trained_model": {"loss": "mnrl"}})
    assert pairs.loss == "mnrl" and train_settings(pairs, configs.training_pairs, 1000).span_rows == 0
    assert planned("inference_free")[2].loss == "mnrl"
    # mined_negatives without the hybrid teacher writes no matrix, so loss auto trains mnrl
    assert planned("dense", {"mined_negatives": {"teacher": "default"}})[2].loss == "mnrl"


def test_the_estimate_reads_the_other_assets_configs_of_the_run():
    from finetune_assets.stages.corpus.cost_estimate import train_settings

    ops = {"bedrock_batch_outputs": {"queries_per_type": 3}, "training_pairs": {"held_out_fraction": 0.5,
                                                                                "span_queries": 0},
           "mined_negatives": {"num_negatives": 4}, "trained_model": {"loss": "mnrl", "epochs": 3}}
    configs, queries_per_type, hp = planned("dense", ops)
    train = train_settings(hp, configs.training_pairs, sampled_documents=1000)
    assert (queries_per_type, hp.num_negatives, train.epochs, train.held_out_fraction) == (3, 4, 3.0, 0.5)
    # trained_model's own num_negatives wins over what mined_negatives mines
    assert planned("dense", {**ops, "trained_model": {"loss": "mnrl", "num_negatives": 2}})[2].num_negatives == 2


def test_default_token_counter_is_the_packaged_tokenizer():
    count, method = default_token_counter()
    assert "MiniLM" in method
    counts = count(["retrieval", "the quick brown fox jumps over the lazy dog"])
    assert counts[1] == 9 and 1 <= counts[0] <= 3
    assert not math.isnan(sum(counts))


def test_a_model_soup_is_priced_as_its_members_trained_one_after_another(documents):
    def training(train):
        return next(i for i in estimate(documents, training_rows_per_second=10.0, train=train).items
                    if i.group == "training")
    one = TrainSettings(loss="batch_kl", epochs=2.0, batch_size=32, span_rows=500.0, max_steps=10)
    four = TrainSettings(loss="batch_kl", epochs=2.0, batch_size=32, span_rows=500.0, max_steps=10, soup_size=4)
    assert training(four).note.startswith("1,280 rows") and training(one).note.startswith("320 rows")
    assert "a soup of 4 models" in estimate(documents, train=four).assumptions["training"]
    # The asset prices trained_model's soup_size: one model unless set.
    from finetune_assets.stages.corpus.cost_estimate import train_settings

    assert planned("sparse")[2].soup_size == 1
    configs, _, hp = planned("sparse", {"trained_model": {"soup_size": 2}})
    assert train_settings(hp, configs.training_pairs, 1000).soup_size == 2


def test_the_students_own_candidates_are_priced_as_more_passages_per_row(documents):
    from finetune_assets.stages.corpus.cost_estimate import train_settings

    def training_cost(train):
        return next(i for i in estimate(documents, training_rows_per_second=None, train=train).items
                    if i.group == "training").usd

    plain = TrainSettings(loss="batch_kl", batch_size=32, span_rows=500.0, max_steps=10, candidates_per_query=8)
    own = TrainSettings(loss="batch_kl", batch_size=32, span_rows=500.0, max_steps=10, candidates_per_query=8,
                        student_candidates_per_query=4)
    assert training_cost(own) > training_cost(plain)
    configs, _, hp = planned("sparse", {"trained_model": {"experimental": {"student_candidates_per_query": 4}}})
    assert train_settings(hp, configs.training_pairs, 1000).student_candidates_per_query == 4
    assert planned("sparse")[2].student_candidates_per_query == 0


def test_the_estimate_command_prices_the_default_configs_and_names_a_bad_flag(tmp_path, capsys):
    import argparse

    from finetune_assets.cli import _estimate
    from finetune_assets_tests.conftest import write_tiny_corpus

    corpus, _ = write_tiny_corpus(tmp_path)

    def estimate_command(**flags) -> int:
        args = {"corpus": str(corpus), "max_docs": None, "bedrock_model": None, "instance_type": None,
                "rows_per_second": None, "budget_minutes": None, "json": None, **flags}
        return _estimate(argparse.Namespace(**args))

    assert estimate_command() == 0
    out = capsys.readouterr().out
    assert "batch_kl: 2.0 epoch(s)" in out  # trained_model's default loss and table entry
    assert "training on SageMaker: " in out and "set by " in out
    # 24 documents give about 77 rows, 6 steps of 32 in 2 epochs; 0.2 minutes at 10 rows/s = 120 rows = 3 steps.
    assert estimate_command(budget_minutes=0.2, rows_per_second=10.0, json=str(tmp_path / "e.json")) == 0
    assert "3 steps of 32 rows, set by training_budget_minutes" in capsys.readouterr().out
    assert read_json(tmp_path / "e.json")["training"] == {"steps": 3, "batch_size": 32, "set_by": "budget",
                                                          "minutes": pytest.approx(96 / 10 / 60)}
    assert estimate_command(budget_minutes=60.0, rows_per_second=10.0) == 0
    assert "6 steps of 32 rows, set by the epochs over the rows" in capsys.readouterr().out
    assert estimate_command(budget_minutes=0) == 2
    assert "--budget-minutes 0: Input should be greater than 0" in capsys.readouterr().err
    assert estimate_command(rows_per_second=-1.0) == 2
    assert "--rows-per-second -1.0: Input should be greater than 0" in capsys.readouterr().err
    assert estimate_command(max_docs=-3) == 2
    assert "--max-docs -3: Input should be greater than or equal to 0" in capsys.readouterr().err
