"""A reflection's answer is bounded by its schema (so a grammar keeps a 135M model inside the token
limit and the allowed values) and validated against the events it was shown: a provider that
ignores the schema gets the same verdicts. Through the real CLI against a loopback server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import invoke, json_data, mind_events
from provider_servers import FakeServer

from pmm import errors
from pmm.services import reflection_answer as answer
from pmm.services.tokens import estimate_tokens

# What llama.cpp's grammar admits for an integer: the schema's minimum/maximum are ignored.
GRAMMAR_INTEGER = "-" + "9" * 16


def longest(node: dict[str, Any]) -> str:
    """The longest JSON text the grammar built from ``node`` admits, with a space at every place
    the grammar allows one. Fails on anything the schema leaves unbounded."""
    if "enum" in node:
        return max((json.dumps(v) for v in node["enum"]), key=len) + " "
    kind = node["type"]
    if kind == "object":
        assert node["additionalProperties"] is False, node
        pairs = [f"{json.dumps(key)} : {longest(value)}" for key, value in node["properties"].items()]
        return "{ " + ", ".join(pairs) + "} "
    if kind == "array":
        return "[ " + ", ".join([longest(node["items"])] * node["maxItems"]) + "] "
    if kind == "string":
        # No quote, no backslash, nothing outside printable ASCII: no escapes, one byte a character.
        assert set(answer.TEXT_CHARS) <= set(map(chr, range(32, 127))) - set('"\\')
        rest = node["pattern"]
        for allowed in (answer.TEXT_CHARS, "[A-Z]", "[a-z]"):
            rest = rest.replace(allowed, "")
        assert rest.startswith("^") and rest.endswith("}$") and not set(rest) & set('[]\\"'), node
        return '"' + "x" * node["maxLength"] + '" '
    assert kind == "integer", node
    return GRAMMAR_INTEGER + " "


def test_the_longest_answer_the_schema_admits_fits_the_token_limit_with_a_margin() -> None:
    text = longest(answer.SCHEMA)
    # Printable ASCII only, and every token the model emits holds at least one byte: the byte
    # count bounds the tokens of any answer, whatever the tokenizer.
    bound = len(text.encode())
    assert bound <= 0.9 * answer.ANSWER_TOKENS, (bound, answer.ANSWER_TOKENS)
    assert estimate_tokens(text) <= bound
    doc = " ".join((Path(__file__).parents[1] / "docs" / "mind-model.md").read_text().split())
    assert f"schema admits is {bound} bytes" in doc and f"limit of {answer.ANSWER_TOKENS:,} tokens" in doc
    from llama_cpp import Llama

    from pmm.providers.local import embedded_path

    path = embedded_path()
    assert path is not None, "the embedded model is part of the test environment"
    vocab = Llama(model_path=str(path), vocab_only=True, verbose=False)
    assert len(vocab.tokenize(text.encode(), add_bos=False)) <= bound


def test_the_longest_summary_the_schema_admits_fits_its_token_limit_with_a_margin() -> None:
    from pmm.services import consolidation

    text = longest(consolidation.SCHEMA)  # printable ASCII without escapes, like a reflection
    bound = len(text.encode())
    assert bound <= 0.9 * consolidation.SUMMARY_TOKENS, (bound, consolidation.SUMMARY_TOKENS)
    assert consolidation.parse(json.dumps({"summary": "x" * 5000})) == "x" * consolidation.SUMMARY_CHARS
    doc = " ".join((Path(__file__).parents[1] / "docs" / "mind-model.md").read_text().split())
    assert (f"longest answer its schema admits is {bound} bytes, within its limit of"
            f" {consolidation.SUMMARY_TOKENS:,} tokens") in doc
    assert f"(at most {consolidation.SUMMARY_CHARS:,} characters" in doc


def test_the_embedded_grammar_holds_every_bound_or_refuses_the_schema() -> None:
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    from pmm.providers.local import grammar

    rules = dict(line.split(" ::= ", 1) for line in json_schema_to_gbnf(json.dumps(answer.SCHEMA)).splitlines())
    assert rules["traits-item-delta"].split(" | ") == [f'"{s}"' for s in answer.STEPS]
    assert answer.STEPS[0] == -0.05 and answer.STEPS[-1] == 0.05 and 0 not in answer.STEPS
    assert rules["open-item-text"].startswith('"\\"" "I will" " "')
    assert "number" not in rules  # every number is an enum
    assert grammar(answer.SCHEMA) is grammar(answer.SCHEMA)  # built once
    with pytest.raises(errors.ProviderError, match="cannot be held"):
        grammar({"type": "object", "properties": {"x": {"type": "string", "pattern": "no anchors"}}})


@pytest.fixture
def served(tmp_path: Path):
    mind = tmp_path / "mind.db"
    with FakeServer("openai") as server:
        for args in (("init", "--name", "Test"),
                     ("model", "add", "srv", "openai-compatible:test-model", "--base-url", server.url, "--use")):
            assert invoke("--mind", str(mind), *args).exit_code == 0
        yield mind, server


def chat(mind: Path, server: FakeServer, message: str, answer_text: str = "Noted.") -> dict[str, Any]:
    server.text = answer_text
    result = invoke("--mind", str(mind), "chat", "--json", "-m", message)
    assert result.exit_code == 0, result.output
    return json_data(result.stdout)


def reflect(mind: Path, server: FakeServer, output: dict[str, Any]) -> Any:
    server.text = json.dumps(output)
    return invoke("--mind", str(mind), "reflect", "--json")


def test_out_of_bounds_steps_unshown_evidence_and_non_promises_are_rejected(served) -> None:
    mind, server = served
    turn = chat(mind, server, "I planted tomatoes and basil in the garden today.")
    result = reflect(mind, server, {
        "reflection": "The user planted tomatoes; gardening matters to them.",
        "traits": [{"trait": "neuroticism", "delta": -24, "evidence": [turn["message_id"]], "reason": "very calm"},
                   {"trait": "conscientiousness", "delta": 0.02, "evidence": [turn["message_id"]],
                    "reason": "tends a garden"},
                   {"trait": "openness", "delta": 0.01, "evidence": [turn["message_id"]], "reason": "a third"}],
        "open": [{"text": "You're right there in my store"}],
        "close": [],
    })
    assert result.exit_code == 0, result.output
    body = server.requests[-1].body
    assert body["response_format"] == {"type": "json_object", "schema": answer.SCHEMA}
    assert body["max_tokens"] == answer.ANSWER_TOKENS
    prompt = " ".join(m["content"] for m in body["messages"])
    assert f"#{turn['message_id']}" in prompt and "I planted tomatoes" in prompt  # ids are visible
    report = json_data(result.stdout)
    (step,) = report["changes"]
    assert step["kind"] == "trait_adjusted" and step["meta"]["delta"] == 0.02
    assert step["content"] == f"tends a garden (#{turn['message_id']})"
    rejected = " | ".join(report["rejected"])
    for needle in ("traits[0].delta", "traits: 1 past the first 2 ignored", "open[0].text", "first-person promise"):
        assert needle in rejected, needle

    later = chat(mind, server, "The basil is growing fast.")
    result = reflect(mind, server, {
        "reflection": "The basil grows.",
        "traits": [{"trait": "openness", "delta": 0.05, "evidence": [turn["message_id"]], "reason": "old news"}],
        "open": [{"text": "I will ask about the basil harvest next week", "due_in_hours": 168}],
        "close": [],
    })
    report = json_data(result.stdout)
    assert [c["kind"] for c in report["changes"]] == ["commitment_opened"]
    assert report["changes"][0]["meta"]["due"]
    assert f"traits[0].evidence: #{turn['message_id']} not among the events shown" in report["rejected"]
    commitment = report["changes"][0]["id"]

    chat(mind, server, "We harvested the basil and made pesto.")
    result = reflect(mind, server, {
        "reflection": "The basil was harvested for pesto.", "traits": [], "open": [],
        "close": [{"commitment": commitment, "evidence": [later["message_id"]], "statement": "I asked them"}],
    })
    report = json_data(result.stdout)
    assert report["changes"] == []
    assert f"close[0].evidence: #{later['message_id']} for #{commitment} not among the events shown" in report["rejected"]
    chat(mind, server, "The pesto was lovely.")
    result = reflect(mind, server, {  # a promise of an act, but about nothing that happened
        "reflection": "The user loved the pesto.", "traits": [], "close": [],
        "open": [{"text": "I will am alos ajut en la cadea de 15 ano"}]})
    report = json_data(result.stdout)
    assert report["changes"] == [] and any("about nothing in the events shown" in r for r in report["rejected"])
    pesto = chat(mind, server, "We made more pesto.")
    result = reflect(mind, server, {  # grounded only by quoting an id of the prompt
        "reflection": "The user made pesto.", "traits": [], "close": [],
        "open": [{"text": f"I will #{pesto['message_id']}: the user wrote pesto"}]})
    report = json_data(result.stdout)
    assert report["changes"] == [] and any("about nothing in the events shown" in r for r in report["rejected"])
    deltas = [e["meta"]["delta"] for e in mind_events(mind, "trait_adjusted")]
    assert deltas == [0.02]  # -24 and the step on old evidence never reached the ledger


@pytest.mark.parametrize("text", ["", "   ", "{...}", "./#3", "I am a test and my goal is to improve myself."])
def test_an_empty_or_ungrounded_reflection_records_nothing(served, text: str) -> None:
    mind, server = served
    turn = chat(mind, server, "My sister Anna visits next week; we will cook pasta.")
    before = mind_events(mind)
    result = reflect(mind, server, {
        "reflection": text, "open": [], "close": [],
        "traits": [{"trait": "openness", "delta": 0.01, "evidence": [turn["message_id"]], "reason": "a visit"}],
    })
    assert result.exit_code == 5, result.output
    assert "reflection" in result.stderr and "Traceback" not in result.output
    assert mind_events(mind) == before


def test_a_reflection_is_grounded_by_a_shared_word_or_a_cited_id() -> None:
    shown = {7: "I planted tomatoes in the garden.", 8: "Lovely, tomatoes need sun."}
    assert answer.grounded("The user is gardening this spring.", shown)  # a stem in common
    assert answer.grounded("Something happened in #8.", shown)
    assert not answer.grounded("Something happened in #9.", shown)  # not an event shown
    assert not answer.grounded("I think that this would be good for them.", shown)  # common words only
    assert not answer.grounded("The garden.", {})
    assert not answer.grounded("The user wrote: hi there", {1: "I wrote a letter"})  # the grammar's start
    # the examples of docs/mind-model.md
    assert answer.grounded("The user is travelling soon", {1: "I will be travelling next week"})
    assert answer.grounded("The user was cooking", {1: "We cook pasta."})
    assert not answer.grounded("I am a test and my goal is to improve myself", shown)


def test_a_reflection_is_grounded_only_in_the_text_it_was_shown(served) -> None:
    mind, server = served
    chat(mind, server, "Water. " * 70 + "Kilimanjaro is where we climb next summer.")
    before = mind_events(mind)
    result = reflect(mind, server, {"reflection": "The user plans Kilimanjaro.", "traits": [], "open": [], "close": []})
    prompt = " ".join(m["content"] for m in server.requests[-1].body["messages"])
    assert "clipped to 400 of" in prompt and "Kilimanjaro" not in prompt  # the model never saw it
    assert result.exit_code == 5 and "does not mention anything" in result.stderr
    assert mind_events(mind) == before


def commitments(mind: Path, count: int) -> None:
    from pmm.domain.events import Draft
    from pmm.services import opening

    with opening.open_write(mind, lambda _m: None) as opened:
        opened.append([Draft("commitment_opened", f"I will keep promise {n} " + "about the garden " * 11,
                             {"source": "user"}) for n in range(count)])


@pytest.mark.parametrize("window", [2048, answer.ANSWER_TOKENS + 700])
def test_the_fixed_part_of_the_prompt_shrinks_to_leave_the_answer_its_room(served, window: int) -> None:
    from pmm.services import reflection_window

    mind, server = served
    assert invoke("--mind", str(mind), "model", "add", "small", "openai-compatible:test-model", "--base-url",
                  server.url, "--use", "--context-window", str(window)).exit_code == 0
    commitments(mind, 20)
    turn = chat(mind, server, "I planted tomatoes and basil in the garden today.")
    result = reflect(mind, server, {"reflection": "The user planted tomatoes.", "traits": [], "open": [], "close": []})
    assert result.exit_code == 0, result.output
    body = server.requests[-1].body
    prompt = "\n".join(m["content"] for m in body["messages"])
    assert estimate_tokens(prompt) + body["max_tokens"] + reflection_window.MARGIN <= window  # the answer fits whole
    assert body["max_tokens"] == answer.ANSWER_TOKENS and f"#{turn['message_id']} user" in prompt
    assert "promise 19" in prompt  # the latest commitments are still shown, clipped harder


def test_a_window_too_small_for_any_reflection_is_a_clear_error(served) -> None:
    mind, server = served
    assert invoke("--mind", str(mind), "model", "add", "tiny", "openai-compatible:test-model", "--base-url",
                  server.url, "--use", "--context-window", str(answer.ANSWER_TOKENS + 100)).exit_code == 0
    chat(mind, server, "I planted tomatoes and basil in the garden today.")
    posts = len(server.requests)
    result = reflect(mind, server, {"reflection": "The user planted tomatoes.", "traits": [], "open": [], "close": []})
    assert result.exit_code == 5 and "too small for a reflection" in result.stderr
    assert len(server.requests) == posts  # no call the model could not answer in full
