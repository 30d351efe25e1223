"""The prompt a turn sends: its token estimate never undercounts the embedded model's own
tokenizer, the whole prompt fits its window, recall finds word forms and reads a short
follow-up with the question before it, and the recent turns take whatever recall leaves."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from conftest import invoke, json_data
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pmm.domain import events as ev
from pmm.domain.events import Draft
from pmm.ledger import folded
from pmm.services import context, opening, tokens

SAMPLES = [
    "Hey Mel! Good to see you! How have you been?",
    "def f(x):\n    return {'a': [1, 2, 3]}  # comment",
    "東京都は日本の首都です。", "😀😃🎉 emoji party 🚀", "Привет, как дела? Всё хорошо.",
    "1234567890 3.14159 2026-12-01T22:16:17.123456Z", "https://example.com/path?q=1&b=2#frag",
    "Pneumonoultramicroscopicsilicovolcanoconiosis antidisestablishmentarianism",
    "naïve café résumé Ærøskøbing", "ABCDEFGHIJKLMNOP QRSTUVWXYZ", "I I I I I I I I",
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "a" * 3000,
    "ab" * 500, "....,,,,!!!!", "\x00\x01\x02\x1b[31m", "\n\n\n\t  x", "नमस्ते दुनिया",
    "HelloWorld FooBar McDonald iPhone", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕞𝕒𝕥𝕙 𒀀𒀁",
    "aBcDeF" * 200, "a  " * 500, "One sentence.  Two spaces after it.  " * 40,
    "TWFuIGlzIGRpc3Rpbmd1aXNoZWQsIG5vdCBvbmx5IGJ5IGhpcyByZWFzb24sIGJ1dCBieSB0aGlz" * 20,
    "https://example.com/u/XyZ9aBc3QwE/r?id=Kq7PzM2vN8&t=aB3cD4eF5" * 20,
]

@pytest.fixture(autouse=True)
def semantic_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """Semantic recall as installed by default (conftest turns it off for other modules)."""
    monkeypatch.setenv("PMM_SEMANTIC", "1")



@pytest.fixture(scope="module")
def tokenizer() -> Any:
    llama_cpp = pytest.importorskip("llama_cpp")
    from pmm.providers import local

    path = local.embedded_path()
    if path is None or not Path(path).exists():
        pytest.skip("the embedded model is not installed")
    model = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    return lambda text: len(model.tokenize(text.encode(), add_bos=False, special=False))


@pytest.mark.parametrize("text", SAMPLES)
def test_the_token_estimate_is_never_below_the_embedded_models_count(tokenizer: Any, text: str) -> None:
    assert tokens.estimate_tokens(text) >= tokenizer(text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(st.characters(codec="utf-8"), max_size=400))
def test_the_token_estimate_holds_for_any_text(tokenizer: Any, text: str) -> None:
    assert tokens.estimate_tokens(text) >= tokenizer(text)


def test_the_token_estimate_is_not_wasteful_on_english(tokenizer: Any) -> None:
    """Close enough that a window is used: at most 1.5 times the real count on plain prose
    (the old "3 characters a token" was 1.6 times on chat text)."""
    prose = " ".join(SAMPLES[:1] * 5 + ["The quick brown fox jumps over the lazy dog while the"
                                         " rain keeps falling on the quiet town."] * 20)
    assert tokens.estimate_tokens(prose) <= 1.5 * tokenizer(prose)


def _mind(tmp_path: Path, turns: list[str], notes: int = 0) -> Path:
    path = tmp_path / "mind.db"
    with opening.init(path, "Echo") as mind:
        drafts = [Draft(ev.SESSION_STARTED.name, "", {"session": "s1"})]
        for n, text in enumerate(turns):
            kind = ev.MESSAGE_RECEIVED.name if n % 2 == 0 else ev.RESPONSE_SENT.name
            drafts.append(Draft(kind, text, {"session": "s1"}))
        drafts += [Draft(ev.OBSERVATION_RECORDED.name, f"note {n}: " + "words " * (n * 7 % 90), {})
                   for n in range(notes)]
        mind.append(drafts)
    return path


def _request_tokens(prompt: context.Prompt) -> int:
    request = prompt.request
    return (tokens.estimate_tokens(request.system) + tokens.estimate_tokens(request.context)
            + sum(tokens.estimate_tokens(m.content) for m in request.messages))


@pytest.mark.parametrize("window", [256, 700, 2048, 8192])
def test_a_prompt_never_exceeds_its_window(tmp_path: Path, window: int) -> None:
    rng = random.Random(window)
    vocab = ["bike", "blue", "Brompton", "garden", "rain", "東京", "🚲", "42", "ride", "work"]
    turns = [" ".join(rng.choice(vocab) for _ in range(rng.randint(1, 400))) for _ in range(300)]
    path = _mind(tmp_path, turns, notes=40)
    for text in ("Tell me about my blue bike and the rain", "東京 🚲 42", "x"):
        assert invoke("--mind", str(path), "-q", "remember", "--pin", "Keep answers short").exit_code == 0
        with opening.open_read(path) as mind:
            states = folded.state(mind)[0]
            prompt = context.build(mind, states, text, window=window, answer_tokens=window // 4)
        assert prompt.tokens <= prompt.budget
        assert _request_tokens(prompt) <= prompt.budget + 8 * len(prompt.request.messages)
        assert prompt.budget + window // 4 <= window


def plan(path: Path, text: str, *extra: str) -> dict[str, Any]:
    result = invoke("--mind", str(path), "recall", text, "--json", *extra)
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json_data(result.stdout)
    return data


def _ids(plan_: dict[str, Any], name: str) -> list[int]:
    return [i["id"] for s in plan_["sections"] if s["name"] == name for i in s["items"]]


def test_recall_finds_word_forms(tmp_path: Path) -> None:
    filler = ["We talked about the weather and a long list of unrelated errands. " * 4] * 60
    path = _mind(tmp_path, ["I have two dogs and I was running with them at dawn.", "Lovely!"] + filler)
    found = plan(path, "Does my dog like to run?", "--window", "1024")
    assert 3 in _ids(found, "recalled")  # event 3: the message (1 genesis, 2 session)


def test_a_short_follow_up_is_read_with_the_question_before_it(tmp_path: Path) -> None:
    filler = ["We talked about the weather and a long list of unrelated errands. " * 4] * 60
    turns = ["My bike is a blue Brompton.", "Noted."] + filler + ["Tell me about my bike.", "Sure."]
    path = _mind(tmp_path, turns)
    found = plan(path, "What colour?", "--window", "1024")
    assert "bike" in found["query"]
    assert 3 in _ids(found, "recalled")


def test_the_recent_turns_take_what_recall_leaves(tmp_path: Path) -> None:
    turns = [f"Short turn number {n} about nothing in particular." for n in range(120)]
    path = _mind(tmp_path, turns)
    found = plan(path, "Explain quantum chromodynamics and gluon confinement", "--window", "2048")
    assert _ids(found, "recalled") == []  # nothing matches, so recall takes no room
    recent = _ids(found, "recent")
    share = next(s["tokens"] for s in found["sections"] if s["name"] == "recent")
    assert share > found["budget"] // 2  # far more than the eighth recent turns are sure of
    assert recent == sorted(recent) and recent[-1] == 2 + len(turns)  # the newest, in order


def test_what_the_recent_turns_cannot_take_goes_to_recall(tmp_path: Path) -> None:
    """The newest turn is too long to send, so the recent part sends nothing: its share is
    recalled instead of left empty (the room left is less than one more recalled turn)."""
    turns = [f"My blue bike went to the garden, ride number {n}." for n in range(300)]
    path = _mind(tmp_path, [*turns, "zzz " * 3000])
    found = plan(path, "Where did my blue bike go?", "--window", "2048")
    assert _ids(found, "recent") == [] and len(_ids(found, "recalled")) > 50
    line = max(i["tokens"] for s in found["sections"] for i in s["items"])
    assert found["budget"] - found["tokens"] <= 2 * line  # not the eighth kept for recent turns


def test_with_estimated_tokens_recall_fills_its_room_too(tmp_path: Path) -> None:
    """The estimate's margin is per text, not per recalled line: a large window is filled to
    within a line or two, not left a few tokens a line short."""
    turns = [f"My blue bike went to the garden, ride number {n}, past the river, the old mill"
             " and the long road up the hill, then home again before the rain." for n in range(600)]
    path = _mind(tmp_path, [*turns, "zzz " * 9000])
    with opening.open_read(path) as mind:
        states = folded.state(mind)[0]
        prompt = context.build(mind, states, "Where did my blue bike go?", window=8192,
                               answer_tokens=512)
    (recalled,) = prompt.sections
    assert recalled.name == "recalled" and len(recalled.items) > 100
    assert prompt.budget - prompt.tokens <= 2 * max(i.tokens for i in recalled.items)


def test_recall_labels_spell_the_day_and_each_group_is_labelled_once(tmp_path: Path) -> None:
    assert context.spelled("2023-05-08") == "8 May 2023"
    assert context.spelled("2024-12-31") == "31 December 2024"
    assert context.spelled("2024-13-01") == "2024-13-01"  # not a month: shown as it is
    turns = [f"My blue bike went to the garden, ride number {n}." for n in range(40)]
    path = _mind(tmp_path, [*turns, *["Unrelated words about the weather."] * 40])
    found = plan(path, "Where did my blue bike go?", "--window", "2048")
    context_text = found["request"]["context"]
    today = context.spelled(found["sections"][0]["items"][0]["said_at"][:10])
    assert context_text.count(f"[{today}]") == 1  # one session, one label, paid once
    assert f"Today: {today}." in context_text


@pytest.mark.parametrize(("window", "asked", "reserve"), [
    (2048, None, 256), (8192, None, 512), (1024, None, 128), (2048, "512", 512), (2048, "5000", 1024)])
def test_the_answer_reserve_is_an_eighth_of_a_small_window_unless_asked(
        tmp_path: Path, window: int, asked: str | None, reserve: int) -> None:
    path = _mind(tmp_path, ["hello", "hi"])
    found = plan(path, "hello again", "--window", str(window),
                 *(["--max-tokens", asked] if asked else []))
    assert found["answer_tokens"] == reserve
    assert found["budget"] == window - reserve - 32


@pytest.mark.parametrize("words", [1300, 1318, 1325, 1332, 1340])
def test_a_message_that_leaves_recall_almost_no_room_is_planned(tmp_path: Path, words: int) -> None:
    path = _mind(tmp_path, ["an apple a day", "keeps it away"])
    found = plan(path, " ".join(["apple"] * words))
    assert found["tokens"] <= found["budget"] or not _ids(found, "recalled")


def test_standing_memory_never_pushes_the_prompt_over_its_budget(tmp_path: Path) -> None:
    path = _mind(tmp_path, ["hello", "hi"])
    assert invoke("--mind", str(path), "-q", "persona", "set", "p" * 1990).exit_code == 0
    found = plan(path, " ".join(["word"] * 1100))
    assert found["tokens"] <= found["budget"]


def test_a_turn_kept_for_the_recent_part_is_sent_or_recalled(tmp_path: Path) -> None:
    """The recent part never starts with an answer (it would not be sent), so an answer held
    back from recall for being recent is either sent or recalled, never lost between them."""
    path = tmp_path / "mind.db"
    with opening.init(path, "Echo") as mind:
        mind.append([Draft(ev.SESSION_STARTED.name, "", {"session": "s"}),
                     Draft(ev.RESPONSE_SENT.name, "Noted: your bike is a blue Brompton.", {"session": "s"}),
                     Draft(ev.RESPONSE_SENT.name, "Anything else about the Brompton?", {"session": "s"}),
                     Draft(ev.MESSAGE_RECEIVED.name, "Not now.", {"session": "s"}),
                     Draft(ev.RESPONSE_SENT.name, "Fine.", {"session": "s"})])
    found = plan(path, "What colour is my Brompton bike?")
    sent = set(_ids(found, "recalled")) | set(_ids(found, "recent"))
    assert {3, 4} <= sent
    with opening.open_read(path) as mind:
        prompt = context.build(mind, folded.state(mind)[0], "What colour is my Brompton bike?",
                               window=2048, answer_tokens=512)
    sent_text = prompt.request.context + "".join(m.content for m in prompt.request.messages)
    for item in (i for s in prompt.sections if s.name != "standing" for i in s.items):
        assert item.event.content in sent_text  # what the plan lists is what is sent


def test_a_word_in_more_events_than_a_query_may_score_is_left_out(tmp_path: Path) -> None:
    from pmm.ledger import lookup

    path = _mind(tmp_path, ["thanks a lot", "thanks again", "thanks, see you", "a rare zebra"])
    with opening.open_read(path) as mind:
        assert lookup.ranked(mind, ["thanks"], ["message_received", "response_sent"], 10, postings=2) == []
        found = lookup.ranked(mind, ["thanks", "zebra"], ["message_received", "response_sent"], 10,
                              postings=2)
    assert [e.content for e, _ in found] == ["a rare zebra"]


def test_trace_of_an_answer_with_altered_section_ids_does_not_crash(tmp_path: Path) -> None:
    from conftest import unguarded

    path = _mind(tmp_path, ["hello", "hi"])
    conn = unguarded(path)
    meta = '{"context":[2,"x",100000000000000000000],"recalled":[[1]],"reply_to":3,"standing":5}'
    conn.execute("UPDATE events SET meta = ? WHERE id = 4", (meta,))
    conn.close()
    result = invoke("--mind", str(path), "trace", "4", "--json")
    assert result.exit_code in (0, 3), result.output
    assert "Traceback" not in result.output


def test_a_crafted_mind_cannot_crash_recall_labels_or_dates(tmp_path: Path) -> None:
    """Dates and session titles come from a file that may be someone else's: a bad
    ``original_ts`` falls back to the ledger's time, a session start with meta that is not an
    object is refused by name (exit 3), never a traceback."""
    from conftest import unguarded

    path = tmp_path / "mind.db"
    with opening.init(path, "Echo") as mind:
        mind.append([Draft(ev.SESSION_STARTED.name, "Trip " * 100, {"source": "chatgpt", "source_id": "c1"}),
                     Draft(ev.MESSAGE_RECEIVED.name, "My bike is a blue Brompton",
                           {"source": "chatgpt", "source_id": "m1", "session": "c1"}),
                     Draft(ev.RESPONSE_SENT.name, "Noted.", {"source": "chatgpt", "source_id": "m2",
                                                              "session": "c1"})]
                    + [Draft(kind, "Unrelated errands and the weather, at some length. " * 6, {"session": "s2"})
                       for _ in range(40) for kind in (ev.MESSAGE_RECEIVED.name, ev.RESPONSE_SENT.name)])
    conn = unguarded(path)
    conn.execute("""UPDATE events SET meta = '{"original_ts":"not a date","session":"c1"}' WHERE id = 3""")
    conn.close()
    found = plan(path, "What colour is my Brompton bike?")
    recalled = {i["id"]: i["said_at"] for s in found["sections"] if s["name"] == "recalled"
                for i in s["items"]}
    assert recalled[3].startswith("20") and "not a date" not in json.dumps(found)
    conn = unguarded(path)
    conn.execute("UPDATE events SET meta = '[]' WHERE id = 2")
    conn.close()
    result = invoke("--mind", str(path), "recall", "What colour is my Brompton bike?")
    assert result.exit_code == 3 and "event 2" in result.stderr, result.output  # named, no traceback


def _sent_tokens(prompt: context.Prompt, count: Any) -> int:
    """The prompt as the embedded model reads it: each message with its role markers."""
    request = prompt.request
    parts = [request.system, *(m.content for m in request.sent())]
    return sum(count(p) + tokens.TEMPLATE_TOKENS for p in parts if p)


@pytest.mark.parametrize("window", [700, 2048])
def test_counted_by_the_models_own_tokenizer_a_prompt_fills_its_window_and_never_overflows(
        tmp_path: Path, tokenizer: Any, window: int) -> None:
    """A local model's prompt is planned with its own token counts: more of the window is
    used than with the high estimate, and what is sent still fits beside the answer."""
    rng = random.Random(window)
    vocab = ["bike", "blue", "Brompton", "garden", "rain", "東京", "🚲", "42", "ride", "work"]
    turns = [" ".join(rng.choice(vocab) for _ in range(rng.randint(1, 120))) for _ in range(200)]
    path = _mind(tmp_path, turns, notes=20)
    with opening.open_read(path) as mind:
        states = folded.state(mind)[0]
        text = "Tell me about my blue bike and the rain"
        estimated = context.build(mind, states, text, window=window, answer_tokens=window // 4)
        exact = context.build(mind, states, text, window=window, answer_tokens=window // 4,
                              count=tokenizer)
    assert exact.exact and not estimated.exact
    assert _sent_tokens(exact, tokenizer) <= window - window // 4
    assert _sent_tokens(exact, tokenizer) > _sent_tokens(estimated, tokenizer)


def test_recall_for_the_embedded_model_counts_with_its_tokenizer(tmp_path: Path, tokenizer: Any) -> None:
    path = _mind(tmp_path, ["My bike is a blue Brompton.", "Nice!"] * 3)
    assert plan(path, "What colour is my bike?")["tokens_counted"] == "model"
    assert invoke("--mind", str(path), "-q", "model", "add", "gone", "local:/nonexistent/model.gguf").exit_code == 0
    result = plan(path, "What colour is my bike?", "--model", "gone")  # no vocabulary: estimated
    assert result["tokens_counted"] == "estimate"
    assert "bike" in json.dumps(result["sections"])


def test_a_local_model_path_from_a_mind_file_is_not_opened_to_count_tokens(tmp_path: Path) -> None:
    """A mind from someone else may name any file as a local model: until the owner trusts that
    setting here, recall does not open it (tokens are estimated)."""
    from pmm.providers import local

    path = _mind(tmp_path, ["My bike is a blue Brompton.", "Nice!"] * 3)
    gguf = local.embedded_path()
    if gguf is None:
        pytest.skip("the embedded model is not installed")
    assert invoke("--mind", str(path), "-q", "model", "add", "theirs", f"local:{gguf}").exit_code == 0
    assert plan(path, "What colour is my bike?", "--model", "theirs")["tokens_counted"] == "model"
    assert invoke("--mind", str(path), "-q", "model", "trust", "theirs", "--revoke").exit_code == 0
    local._VOCABS.clear()
    assert plan(path, "What colour is my bike?", "--model", "theirs")["tokens_counted"] == "estimate"
    assert str(gguf) not in local._VOCABS
