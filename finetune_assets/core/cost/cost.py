"""What a corpus would cost on AWS before anything is spent: Bedrock tokens, SageMaker training, an endpoint.

Token counts come from the real prompt (`querygen.prompts.build_query_prompt`) of every document given, counted
with the all-MiniLM-L6-v2 WordPiece tokenizer that ships in a package (Claude's and Nova's tokenizers are not
public, so any local count is a stand-in), or with chars/4 when that tokenizer is not installed. Prices come from
one editable table (prices.toml). Pure logic: nothing here imports Dagster or boto3.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from finetune_assets.core.cost.prices import PriceTable, load_prices
from finetune_assets.core.querygen.prompts import (
    DEFAULT_MAX_DOCUMENT_CHARS,
    SYSTEM_PROMPT,
    build_query_prompt,
    document_text,
)

TokenCounter = Callable[[Sequence[str]], list[int]]

DEFAULT_TRAINING_INSTANCE = "ml.g5.xlarge"  # as resources/sagemaker_pipes.py DEFAULT_INSTANCE_TYPE
DEFAULT_ENDPOINT_INSTANCE = "ml.m5.xlarge"  # a MiniLM-sized encoder serves from CPU
DEFAULT_SERVERLESS_MEMORY_MB = 2048
DEFAULT_REQUESTS_PER_MONTH = 100_000
# The JSON answer: about 30 tokens per query ({"type": "factoid", "text": "<under 20 words>"}) plus the wrapper.
OUTPUT_TOKENS_PER_QUERY = 30
OUTPUT_WRAPPER_TOKENS = 10
# Tokens are counted on at most this many documents and scaled up: a tokenizer pass over a whole large corpus
# would cost minutes for a figure that a few thousand documents already pin down.
MAX_COUNTED_DOCUMENTS = 2000
CHARS_PER_TOKEN_METHOD = "chars/4 (about 4 characters per token in English; other languages use more tokens)"


def chars_per_token_counter(texts: Sequence[str]) -> list[int]:
    return [math.ceil(len(text) / 4) for text in texts]


def minilm_token_counter() -> tuple[TokenCounter, str]:
    """The packaged MiniLM tokenizer, untruncated, without special tokens."""
    from tokenizers import Tokenizer

    from finetune_assets.core.offline_models import minilm_path

    tokenizer = Tokenizer.from_file(str(minilm_path() / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()

    def count(texts: Sequence[str]) -> list[int]:
        return [len(encoding.ids) for encoding in tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    return count, "all-MiniLM-L6-v2 WordPiece tokenizer (a stand-in: Claude and Nova tokenizers are not public)"


def default_token_counter() -> tuple[TokenCounter, str]:
    try:
        return minilm_token_counter()
    except (ImportError, OSError):
        return chars_per_token_counter, CHARS_PER_TOKEN_METHOD


@dataclass(frozen=True)
class TrainSettings:
    """The training run being priced; defaults match the asset configs' defaults. batch_size is reported, not
    modelled: the throughput defaults assume a batch that keeps the GPU busy."""

    epochs: float = 1.0
    batch_size: int = 16
    num_negatives: int = 1
    max_seq_length: int = 256
    held_out_fraction: float = 0.2
    # batch_kl trains every query against its teacher's top candidates_per_query documents, over the generated
    # queries and the span queries (sentences of all sampled documents), for at most max_steps batches.
    loss: str = "mnrl"
    max_steps: int = 0  # 0 = no cap
    candidates_per_query: int = 4
    span_rows: float = 0.0
    soup_size: int = 1  # members trained one after another (core/model_soup.py): the rows are processed this often
    # batch_kl: the student's own top documents each query adds to the pool; priced as more passages per row (an
    # upper bound: some are already among the teacher's candidates)
    student_candidates_per_query: int = 0
    base_model: str = ""  # the model trained: the price table's relative_cost scales its rate ("" = all-MiniLM-L6-v2)


@dataclass(frozen=True)
class LineItem:
    name: str
    group: str           # bedrock | training | realtime_endpoint | serverless_endpoint
    quantity: float
    unit: str
    unit_price_usd: float
    usd: float
    per: str = "run"     # run (spent once, before the model exists) or month (an endpoint, recurring)
    note: str = ""


@dataclass
class CostEstimate:
    documents: int
    documents_counted: int
    items: list[LineItem]
    assumptions: dict = field(default_factory=dict)
    prices_file: str = ""
    prices_as_of: str = ""
    region: str = ""

    @property
    def total_usd(self) -> float:
        """One-time spend of the run: Bedrock plus training (endpoints are monthly and shown apart)."""
        return round(sum(item.usd for item in self.items if item.per == "run"), 6)

    def group_usd(self, *groups: str) -> float:
        return round(sum(item.usd for item in self.items if item.group in groups), 6)

    def biggest_item(self, groups: Sequence[str] | None = None) -> LineItem | None:
        items = [i for i in self.items if i.per == "run" and (groups is None or i.group in groups)]
        return max(items, key=lambda i: i.usd, default=None)

    def to_dict(self) -> dict:
        return {**{k: v for k, v in asdict(self).items() if k != "items"},
                "total_usd": self.total_usd,
                "monthly_realtime_endpoint_usd": self.group_usd("realtime_endpoint"),
                "monthly_serverless_endpoint_usd": self.group_usd("serverless_endpoint"),
                "items": [asdict(item) for item in self.items]}

    def to_markdown(self, title: str = "Cost estimate", notes: Sequence[str] = ()) -> str:
        def row(item: LineItem) -> str:
            unit_price = f"{item.unit_price_usd:.10f}".rstrip("0").rstrip(".")
            return f"| {item.name} | {item.quantity:,.3f} | {item.unit} | {unit_price} | {item.usd:,.2f} | {item.note} |"

        header = ["| item | quantity | unit | unit price (USD) | USD | note |", "|---|---:|---|---:|---:|---|"]
        scope = (f"{self.documents:,} documents (tokens counted on {self.documents_counted:,}); prices "
                 f"{self.region}, table compiled {self.prices_as_of} ({self.prices_file}).")
        lines = [f"### {title}", "", scope, "", *header]
        lines += [row(i) for i in self.items if i.per == "run"]
        lines += [f"| **one-time total** | | | | **{self.total_usd:,.2f}** | Bedrock + training |", "",
                  "Endpoint, per month (one or the other):", "", *header]
        lines += [row(i) for i in self.items if i.per == "month"]
        lines += ["", *(f"- {note}" for note in notes),
                  *(f"- {key}: {value}" for key, value in self.assumptions.items())]
        return "\n".join(lines).rstrip() + "\n"


def _item(name: str, group: str, quantity: float, unit: str, unit_price: float, per: str = "run",
          note: str = "") -> LineItem:
    return LineItem(name, group, quantity, unit, unit_price, quantity * unit_price, per, note)


def _bedrock_items(prices: PriceTable, model_id: str, batch: bool, input_tokens: float,
                   output_tokens: float) -> list[LineItem]:
    price = prices.bedrock(model_id)
    mode, note = ("batch", "") if batch else ("on-demand", "")
    unit_in, unit_out = price.input_per_1k, price.output_per_1k
    if batch and price.batch_input_per_1k is not None and price.batch_output_per_1k is not None:
        unit_in, unit_out = float(price.batch_input_per_1k), float(price.batch_output_per_1k)
    elif batch:
        note = "no batch price in the table: priced at on-demand (upper bound)"
    return [_item(f"Bedrock {price.name} input tokens ({mode})", "bedrock", input_tokens / 1000, "1k tokens",
                  unit_in, note=note),
            _item(f"Bedrock {price.name} output tokens ({mode})", "bedrock", output_tokens / 1000, "1k tokens",
                  unit_out, note=note)]


def passages_per_row(loss: str, candidates_per_query: int, student_candidates_per_query: int,
                     num_negatives: int) -> int:
    """Passages a training row encodes: a query's candidates for batch_kl, (positive, negatives) otherwise."""
    return candidates_per_query + student_candidates_per_query if loss == "batch_kl" else 1 + num_negatives


def generated_training_rows(documents: int, queries_per_type: int, held_out_fraction: float) -> float:
    """Training rows the generated queries give: factoid and conceptual queries of the train-split documents."""
    return documents * (1 - held_out_fraction) * 2 * queries_per_type


def training_rows(train: TrainSettings, generated_rows: float) -> tuple[float, int]:
    """Rows the training run processes, and passages per row: (query, positive, negatives) for the pair losses;
    a query with its teacher's candidates for batch_kl (over the span queries too), capped at max_steps batches."""
    passages = passages_per_row(train.loss, train.candidates_per_query, train.student_candidates_per_query,
                                train.num_negatives)
    rows = (generated_rows + (train.span_rows if train.loss == "batch_kl" else 0.0)) * train.epochs
    if train.max_steps:
        rows = min(rows, train.max_steps * train.batch_size)
    return rows * train.soup_size, passages


def table_rows_per_second(prices: PriceTable, device: str, devices: int, passages: int, passage_tokens: float,
                          base_model: str = "") -> float:
    """The price table's training rate of `devices` x `device` (a GPU type or cpu) for rows of `passages` passages
    of `passage_tokens` tokens: longer rows train proportionally slower than the table's reference row, and a base
    model with a relative_cost entry (bge-small-en) that many times slower than all-MiniLM-L6-v2."""
    throughput = prices.data["training_throughput"]
    row_tokens = throughput["query_tokens"] + passages * passage_tokens
    relative = float(throughput.get("relative_cost", {}).get(base_model.strip().lower(), 1.0))
    return prices.default_rows_per_second(device) * throughput["reference_row_tokens"] / row_tokens * devices / relative


def _training_item(prices: PriceTable, rows: float, passages_per_row: int, passage_tokens: float, instance_type: str,
                   instance_count: int, measured_rows_per_second: float | None, base_model: str = "") -> LineItem:
    """Rows over throughput, plus each instance's billed start-up."""
    instance = prices.training_instance(instance_type)
    if measured_rows_per_second:
        rows_per_second, rate_note = float(measured_rows_per_second), "measured rows/s"
    else:
        device, devices = prices.training_devices(instance_type, instance_count)
        rows_per_second = table_rows_per_second(prices, device, devices, passages_per_row, passage_tokens, base_model)
        row_tokens = prices.data["training_throughput"]["query_tokens"] + passages_per_row * passage_tokens
        rate_note = f"table default for {device}, {row_tokens:.0f}-token rows"
    hours = rows / rows_per_second / 3600 + prices.data["sagemaker_training"].get("overhead_minutes", 0.0) / 60
    return _item(f"SageMaker training {instance_type} x{instance_count}", "training", hours * instance_count,
                 "instance-hour", float(instance["hourly"]),
                 note=f"{rows:,.0f} rows at {rows_per_second:,.1f} rows/s ({rate_note}) + start-up")


def _endpoint_items(prices: PriceTable, instance_type: str, instance_count: int, memory_mb: int,
                    requests_per_month: int) -> list[LineItem]:
    """Per month: an always-on instance, or serverless compute per request; both pay for data processed."""
    realtime, serverless = prices.data["sagemaker_realtime"], prices.data["sagemaker_serverless"]
    data_gb = requests_per_month * serverless["bytes_per_request"] / 1e9
    seconds = serverless["seconds_per_request"]
    return [
        _item(f"Real-time endpoint {instance_type} x{instance_count}", "realtime_endpoint",
              realtime["hours_per_month"] * instance_count, "instance-hour",
              float(prices.realtime_instance(instance_type)["hourly"]), per="month"),
        _item("Real-time endpoint data processed", "realtime_endpoint", data_gb, "GB",
              float(realtime["data_processed_per_gb"]), per="month"),
        _item(f"Serverless endpoint {memory_mb} MB compute", "serverless_endpoint", requests_per_month * seconds,
              "second", prices.serverless_per_second(memory_mb), per="month",
              note=f"{requests_per_month:,} requests x {seconds} s"),
        _item("Serverless endpoint data processed", "serverless_endpoint", data_gb, "GB",
              float(serverless["data_processed_per_gb"]), per="month",
              note=f"no per-request fee (table: {serverless['per_request']})"),
    ]


def training_assumption(train: TrainSettings) -> str:
    held_out = f"max_seq_length {train.max_seq_length}, {train.held_out_fraction:.0%} of documents held out"
    if train.soup_size > 1:
        held_out += f", a soup of {train.soup_size} models trained one after another"
    if train.loss == "batch_kl":
        cap = f", at most {train.max_steps} steps" if train.max_steps else ""
        return (f"batch_kl: {train.epochs} epoch(s) of the generated and ~{train.span_rows:,.0f} span queries{cap}, "
                f"batch {train.batch_size}, {train.candidates_per_query} teacher candidates per query, {held_out}")
    return f"{train.epochs} epoch(s), batch {train.batch_size}, {train.num_negatives} negative(s), {held_out}"


def estimate_cost(documents: Sequence[dict], *, num_documents: int | None = None, queries_per_type: int = 1,
                  max_document_chars: int = DEFAULT_MAX_DOCUMENT_CHARS, bedrock_model_id: str, batch: bool = True,
                  output_tokens_per_query: int = OUTPUT_TOKENS_PER_QUERY, train: TrainSettings = TrainSettings(),
                  training_instance_type: str = DEFAULT_TRAINING_INSTANCE, training_instance_count: int = 1,
                  training_rows_per_second: float | None = None,
                  endpoint_instance_type: str = DEFAULT_ENDPOINT_INSTANCE, endpoint_instance_count: int = 1,
                  serverless_memory_mb: int = DEFAULT_SERVERLESS_MEMORY_MB,
                  requests_per_month: int = DEFAULT_REQUESTS_PER_MONTH,
                  token_counter: tuple[TokenCounter, str] | None = None,
                  max_counted_documents: int = MAX_COUNTED_DOCUMENTS,
                  prices: PriceTable | None = None) -> CostEstimate:
    """Price a corpus on the AWS path. `num_documents` (default: len(documents)) is how many would be sent;
    tokens are counted on the first `max_counted_documents` of `documents` and scaled up, so pass them in a
    random order (sample_documents' order is).

    `training_rows_per_second`: a measured rate for this job (all its GPUs); default: the table's per-GPU rate
    for the instance, scaled by row length and GPU count.
    """
    if not documents:
        raise ValueError("estimate_cost needs at least one document to count tokens on")
    prices = prices or load_prices()
    count, method = token_counter or default_token_counter()
    total_docs = len(documents) if num_documents is None else int(num_documents)
    if total_docs < 0 or training_instance_count < 1 or endpoint_instance_count < 1:
        raise ValueError("num_documents must be >= 0 and instance counts >= 1")
    documents = documents[:max(1, max_counted_documents)]
    scale = total_docs / len(documents)

    # Bedrock: the system prompt and the real user prompt per document, the JSON answer per query.
    prompt_tokens = count([build_query_prompt(d, queries_per_type, max_document_chars) for d in documents])
    system_tokens = count([SYSTEM_PROMPT])[0]
    input_tokens = (sum(prompt_tokens) + system_tokens * len(documents)) * scale
    queries_per_doc = 2 * queries_per_type
    output_tokens = total_docs * (OUTPUT_WRAPPER_TOKENS + queries_per_doc * output_tokens_per_query)
    items = _bedrock_items(prices, bedrock_model_id, batch, input_tokens, output_tokens)

    # Training: one row per kept query; only the first max_seq_length tokens of a passage count.
    passages = [document_text(d, None)[:train.max_seq_length * 10] for d in documents]
    passage_tokens = sum(min(n + 2, train.max_seq_length) for n in count(passages)) / len(documents)
    rows, passages_per_row = training_rows(train, generated_training_rows(total_docs, queries_per_type,
                                                                          train.held_out_fraction))
    items.append(_training_item(prices, rows, passages_per_row, passage_tokens, training_instance_type,
                                training_instance_count, training_rows_per_second, train.base_model))
    items += _endpoint_items(prices, endpoint_instance_type, endpoint_instance_count, serverless_memory_mb,
                             requests_per_month)

    assumptions = {
        "token count": method,
        "Bedrock input tokens per document": round(input_tokens / max(total_docs, 1), 1),
        "Bedrock output tokens per document": OUTPUT_WRAPPER_TOKENS + queries_per_doc * output_tokens_per_query,
        "training": training_assumption(train),
        "sources": "; ".join(prices.source(s) for s in ("bedrock", "sagemaker_training", "sagemaker_serverless")),
    }
    return CostEstimate(documents=total_docs, documents_counted=len(documents), items=items,
                        assumptions=assumptions, prices_file=str(prices.path), prices_as_of=prices.as_of,
                        region=prices.region)
