"""Prompt caching pays: the prompt is sent stable-first (identity and standing memory, then the
older conversation, then the turn's recalled memory with the new message), Anthropic cache
breakpoints end the stable parts where they are long enough to be cached, and a session's turns
after the first are billed mostly as cache reads by a server that caches as Anthropic's does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import cli_json
from provider_servers import FakeServer, split_pieces

from pmm.providers.base import Message, Request
from pmm.providers.registry import ModelSpec, create

ANSWER = ("That is a fair question. From what you have told me, the garden does best with a"
          " little water in the morning, some shade in the afternoon, and patience: roses take"
          " a season or two to settle into new soil.")
# pinned notes a gardener might keep: together past the 1,024 tokens Anthropic caches at least
NOTES = [f"Garden note {n}: " + " ".join(f"bed {n} row {r} holds roses, tulips and sage,"
                                         f" watered at dawn and mulched in autumn;" for r in range(12))
         for n in range(1, 9)]
WRITE, READ = 1.25, 0.1  # what Anthropic charges for a cache write and a cache read, per input token
PRICES = ["--price-in", "3", "--price-out", "15", "--price-cache-read", "0.3", "--price-cache-write", "3.75"]


def marks(body: dict[str, Any]) -> list[str]:
    """Where a request's cache breakpoints are: "system", or "ROLE N" for message N."""
    found = ["system" for block in body.get("system") or [] if "cache_control" in block]
    for n, message in enumerate(body["messages"]):
        content = message["content"]
        if isinstance(content, list) and any("cache_control" in block for block in content):
            found.append(f"{message['role']} {n}")
    return found


def send(server: FakeServer, request: Request, model: str = "claude-sonnet-4-5") -> dict[str, Any]:
    create(ModelSpec("anthropic", model, server.url, "UNSET_KEY_VAR")).complete(request)
    return server.requests[-1].body


def test_breakpoints_end_the_stable_parts_only_where_the_prefix_can_be_cached() -> None:
    conversation = (Message("user", "How are the roses?"), Message("assistant", ANSWER),
                    Message("user", "And the tulips?"))
    with FakeServer("anthropic") as server:
        short = send(server, Request(messages=conversation, system="You are Echo.", context="Recalled: x"))
        assert marks(short) == []  # far below 1,024 tokens: nothing is marked
        # the last message: the turn's context first, then the message, never marked
        assert short["messages"][-1]["content"] == [{"type": "text", "text": "Recalled: x"},
                                                    {"type": "text", "text": "And the tulips?"}]

        standing = "You are Echo.\n\n" + "\n".join(NOTES)
        long = send(server, Request(messages=conversation, system=standing, context="Recalled: x"))
        assert marks(long) == ["system", "assistant 1"]  # the end of each stable part
        assert long["messages"][1]["content"] == [{"type": "text", "text": ANSWER,
                                                   "cache_control": {"type": "ephemeral"}}]

        # a Haiku model caches 2,048 tokens at least: the system prompt alone is too short
        half = "You are Echo.\n\n" + "\n".join(NOTES[:5])
        older = (*conversation[:2], *[Message(r, " ".join(NOTES[5:])) for r in ("user", "assistant")])
        haiku = send(server, Request(messages=(*older, conversation[2]), system=half),
                     model="claude-3-5-haiku-latest")
        assert marks(haiku) == ["assistant 3"]
        assert marks(send(server, Request(messages=(*older, conversation[2]), system=half))) == [
            "system", "assistant 3"]


@pytest.mark.parametrize("window", [[], ["--context-window", "200000"]], ids=["8192", "200000"])
def test_a_ten_turn_session_is_billed_mostly_as_cache_reads(mind: Path, window: list[str]) -> None:
    """In the default window of a remote model (8,192 tokens) the session's questions, all on
    one topic, would be recalled from the conversation into the new message, changing the
    cached prefix; while the conversation fits in half the room it is kept whole instead."""
    with FakeServer("anthropic", text=ANSWER, model="claude-sonnet-4-5", caching=True) as server:
        cli_json(mind, "model", "add", "claude", f"anthropic:{server.model}", "--base-url", server.url,
                 *window, *PRICES, "--use")
        for note in NOTES:
            cli_json(mind, "remember", "--pin", note)
        turns = [cli_json(mind, "chat", *(["-c"] if n else []), "-m",
                          f"Question {n + 1}: what should I plant in bed {n + 1} this spring?")
                 for n in range(10)]
    assert len({t["session"] for t in turns}) == 1
    assert [len(t["sections"]["recent"]) for t in turns] == list(range(0, 20, 2))  # kept whole
    chats = [r for r in server.requests if r.usage is not None and "tools" not in r.body]
    assert len(chats) == 10
    billed = [r.usage for r in chats if r.usage]
    for request in chats:
        assert len(marks(request.body)) <= 2
        assert "Question" not in str(request.body["system"])  # nothing per turn before the breakpoints
    first, *rest = billed
    assert first["cache_read_input_tokens"] == 0 and first["cache_creation_input_tokens"] > 1024
    for n, usage in enumerate(rest, start=2):
        total = sum(usage.values())
        assert usage["cache_read_input_tokens"] > 0.8 * total, (n, usage)  # mostly read
        assert usage["cache_creation_input_tokens"] <= 2 * len(split_pieces(ANSWER)) + 40  # one exchange
    # what the session's prompts cost at Anthropic's rates, against the same tokens uncached
    paid = sum(u["input_tokens"] + WRITE * u["cache_creation_input_tokens"] + READ * u["cache_read_input_tokens"]
               for u in billed)
    uncached = sum(sum(u.values()) for u in billed)
    assert paid < 0.5 * uncached, (paid, uncached)
    # what pmm says the session cost and saved, against the figure computed by hand from what the
    # server billed, at the model's prices (per million: writes 1.25x and reads 0.1x the input's)
    out = len(split_pieces(ANSWER))
    by_hand = sum(u["input_tokens"] * 3 + u["cache_creation_input_tokens"] * 3.75
                  + u["cache_read_input_tokens"] * 0.3 + out * 15 for u in billed) / 1e6
    without = sum(sum(u.values()) * 3 + out * 15 for u in billed) / 1e6
    assert all(t["cost"]["currency"] == "USD" and t["usage_estimated"] is False for t in turns)
    assert abs(sum(t["cost"]["amount"] for t in turns) - by_hand) <= 0.01 * by_hand
    assert sum(t["cost"]["saved"] for t in turns) > 0.5 * without


def test_each_turn_sends_the_previous_turns_prompt_as_its_prefix(mind: Path) -> None:
    """What OpenAI's automatic prefix caching and llama.cpp's KV cache reuse need: the system
    message and the older conversation come back unchanged, the turn's recall only in the new
    message."""
    with FakeServer("openai", text=ANSWER) as server:
        cli_json(mind, "model", "add", "local-server", f"openai-compatible:{server.model}",
                 "--base-url", server.url, "--use")
        cli_json(mind, "remember", "The east plot has clay soil that holds water for days.")
        questions = ["Which roses suit a sunny wall?", "How often should tulips be watered?",
                     "What can grow in clay soil?", "When do roses need pruning?"]
        for n, question in enumerate(questions):
            cli_json(mind, "chat", *(["-c"] if n else []), "-m", question)
    sent = [r.body["messages"] for r in server.requests if r.method == "POST"]
    for before, after, question in zip(sent, sent[1:], questions, strict=False):
        assert after[:len(before) - 1] == before[:-1]  # the system message and older turns
        assert after[len(before) - 1] == {"role": "user", "content": question}  # without its context
        assert after[len(before)] == {"role": "assistant", "content": ANSWER}
    assert "holds water for days" in sent[2][-1]["content"]  # recalled for clay, in that message only
    assert not any("holds water for days" in m["content"] for m in sent[3])



def test_once_the_oldest_turns_give_way_the_conversation_is_not_written_to_the_cache(mind: Path) -> None:
    """A window that slides (each turn drops the oldest) sends a different conversation every
    turn: a cache write of it would never be read, so only the stable system prompt is marked."""
    topics = ["hedgehogs", "beetroot", "lavender", "compost", "wisteria", "potatoes", "slugs",
              "blackbirds", "rhubarb", "fennel", "mint", "ivy", "dahlias", "quince", "moss",
              "clematis", "garlic", "foxgloves", "nettles", "parsnips", "hollyhocks", "sorrel"]
    with FakeServer("anthropic", text=ANSWER * 6, model="claude-sonnet-4-5", caching=True) as server:
        cli_json(mind, "model", "add", "claude", f"anthropic:{server.model}", "--base-url", server.url,
                 "--context-window", "9000", "--use")
        for note in NOTES:
            cli_json(mind, "remember", "--pin", note)
        for n, topic in enumerate(topics):  # words no other turn has: nothing is recalled
            cli_json(mind, "chat", *(["-c"] if n else []), "-m", f"{topic.capitalize()}?")
    chats = [r for r in server.requests if r.usage is not None]
    firsts = [str(r.body["messages"][0]["content"]) for r in chats]
    whole = [n for n, first in enumerate(firsts) if first == "Hedgehogs?"]
    assert 3 < len(whole) <= len(chats) - 2  # the first question was sent for a while, then gave way
    assert all(marks(chats[n].body) == ["system", f"assistant {2 * n - 1}"] for n in whole[1:])
    for request in chats[whole[-1] + 1:]:
        assert marks(request.body) == ["system"]
        assert request.usage == {"input_tokens": request.usage["input_tokens"],
                                 "cache_creation_input_tokens": 0,
                                 "cache_read_input_tokens": chats[0].usage["cache_creation_input_tokens"]}
