"""Issue 16: every answer records its usage in full (cache reads and writes apart, estimates
marked) and the prices in force; stats, trace and chat --json show the cost with its currency
and what caching saved; spending caps refuse a turn before it is sent (exit 5)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import cli_json, json_data, json_failure, mind_events, run_in, run_pmm
from provider_servers import PROMPT_TOKENS, FakeServer, split_pieces

from pmm.domain.costs import money

# Claude 3.5 Haiku's list prices per million tokens: writes 1.25x the input price, reads 0.1x
HAIKU = ("--price-in", "0.8", "--price-out", "4", "--price-cache-read", "0.08", "--price-cache-write", "1")


def asked(server: FakeServer) -> int:
    """Requests for an answer (``model add --use`` also asks about the model)."""
    return sum(1 for r in server.requests if r.method == "POST")


def pmm_in(mind: Path, *args: str) -> tuple[int, str, str]:
    done = run_in("--mind", str(mind), *args)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


def ok(mind: Path, *args: str) -> str:
    code, out, err = pmm_in(mind, *args)
    assert code == 0, err
    return out


@pytest.fixture
def anthropic(mind: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    with FakeServer("anthropic", text="The garden is doing well.") as server:
        ok(mind, "model", "add", "haiku", "anthropic:test-model", "--base-url", server.url, *HAIKU, "--use")
        yield server


def test_a_cached_session_costs_what_the_hand_computed_figure_says(mind: Path, anthropic: FakeServer) -> None:
    """Ten turns as Anthropic bills them: the first writes a 3,000-token prefix to the cache,
    the next nine read it (and write each new exchange); cost and saving per the price list."""
    out_tokens = len(split_pieces(anthropic.text))
    turns = [(40, 0, 3000)] + [(40, 3000 + 60 * n, 60) for n in range(9)]  # fresh, read, write
    for fresh, read, write in turns:
        anthropic.push("usage", input=fresh, cache_read=read, cache_write=write)
    answers = [cli_json(mind, "chat", "-m", f"turn {n}", *(("-c",) if n else ())) for n in range(10)]

    by_hand = sum(f * 0.8 + r * 0.08 + w * 1.0 + out_tokens * 4 for f, r, w in turns) / 1e6
    uncached = sum((f + r + w) * 0.8 + out_tokens * 4 for f, r, w in turns) / 1e6
    first = answers[0]
    assert (first["tokens_in"], first["tokens_cache_read"], first["tokens_cache_write"]) == (3040, 0, 3000)
    assert first["cost"]["currency"] == "USD" and first["usage_estimated"] is False
    assert first["cost"]["amount"] == pytest.approx((40 * 0.8 + 3000 * 1.0 + out_tokens * 4) / 1e6)
    assert sum(a["cost"]["amount"] for a in answers) == pytest.approx(by_hand, rel=1e-9)

    (row,) = cli_json(mind, "stats")["usage"]
    (cost,) = row["cost"]
    assert cost["currency"] == "USD" and abs(cost["amount"] - by_hand) <= 0.01 * by_hand
    assert cost["saved"] == pytest.approx(uncached - by_hand)
    assert cost["saved"] / uncached > 0.5  # caching more than halves the bill
    assert row["cache_read"] == sum(r for _, r, _ in turns) and row["cache_write"] == sum(w for *_, w in turns)
    line = next(x for x in ok(mind, "stats").splitlines() if "anthropic:test-model:" in x)
    assert f"cost {money(by_hand, 'USD')} (caching saved {money(uncached - by_hand, 'USD')})" in line
    assert f"({sum(r for _, r, _ in turns):,} cache read, {sum(w for *_, w in turns):,} cache write)" in line

    traced = cli_json(mind, "trace", str(answers[1]["response_id"]))
    assert traced["tokens_cache_read"] == 3000 and traced["cost"] == answers[1]["cost"]
    assert "cache read" in ok(mind, "trace", str(answers[1]["response_id"]))


def test_a_price_change_leaves_old_costs_as_they_were(mind: Path, anthropic: FakeServer) -> None:
    first = cli_json(mind, "chat", "-m", "hello")
    ok(mind, "model", "set", "haiku", "--price-in", "8", "--price-out", "40", "--currency", "eur")
    second = cli_json(mind, "chat", "-m", "hello again")
    (meta_1, meta_2) = [e["meta"] for e in mind_events(mind, "response_sent")]
    assert (meta_1["price_in"], meta_1["price_cache_read"], meta_1["currency"]) == (0.8, 0.08, "USD")
    assert (meta_2["price_in"], meta_2["price_out"], meta_2["currency"]) == (8, 40, "EUR")
    assert cli_json(mind, "trace", str(first["response_id"]))["cost"] == first["cost"]
    (row,) = cli_json(mind, "stats")["usage"]
    assert {c["currency"]: c["amount"] for c in row["cost"]} == {
        "USD": pytest.approx(first["cost"]["amount"]), "EUR": pytest.approx(second["cost"]["amount"])}


def test_openai_cached_tokens_and_llama_cpp_timings_are_priced_apart(mind: Path) -> None:
    with FakeServer("openai", text="Fine.") as server:
        ok(mind, "model", "add", "gpt", "openai-compatible:test-model", "--base-url", server.url,
           "--price-in", "2", "--price-out", "8", "--price-cache-read", "0.5", "--use")
        server.push("usage", input=1000, cache_read=800)  # prompt_tokens_details.cached_tokens
        server.push("usage", input=1000, cache_n=600)  # llama.cpp's server: timings.cache_n
        openai, llama = cli_json(mind, "chat", "-m", "hi"), cli_json(mind, "chat", "-m", "hi")
    out = len(split_pieces("Fine."))
    assert (openai["tokens_in"], openai["tokens_cache_read"], openai["tokens_cache_write"]) == (1000, 800, None)
    assert openai["cost"]["amount"] == pytest.approx((200 * 2 + 800 * 0.5 + out * 8) / 1e6)
    assert openai["cost"]["saved"] == pytest.approx(800 * 1.5 / 1e6)
    assert llama["tokens_cache_read"] == 600


def test_unreported_usage_is_estimated_and_stats_says_how_many(mind: Path) -> None:
    """A server that ignores stream_options.include_usage: the streamed answer's counts are
    estimated, marked, and stats says so instead of showing one answer's counts of several."""
    from pmm.services.chat import Chat

    with FakeServer("openai", text="Streamed without usage.") as server:
        ok(mind, "model", "add", "local", "openai-compatible:test-model", "--base-url", server.url,
           "--price-in", "1", "--price-out", "1", "--use")
        with Chat(mind, lambda _m: None) as chat:
            server.push("no_usage")
            pieces: list[str] = []
            streamed = chat.turn("tell me", pieces.append)
            reported = chat.turn("and again", pieces.append)
    assert streamed.completion.estimated and not reported.completion.estimated
    estimated, counted = (e["meta"] for e in mind_events(mind, "response_sent"))
    assert estimated["usage_estimated"] is True and estimated["tokens_in"] > 10 and estimated["tokens_out"] > 0
    assert "usage_estimated" not in counted and counted["tokens_in"] == PROMPT_TOKENS
    (row,) = cli_json(mind, "stats")["usage"]
    assert row["estimated"] == 1 and row["answers"] == 2
    assert "token counts of 1 of 2 answers and reflections are estimates" in ok(mind, "stats")
    assert "(estimated: the provider reported none)" in ok(mind, "trace", str(streamed.response.id))


def test_the_daily_cap_refuses_the_turn_that_could_pass_it(mind: Path, anthropic: FakeServer) -> None:
    # at most ~0.0019 a turn (its prompt at the write price, 400 answer tokens at 4 per million);
    # the first spends 0.0015 (1,500 tokens written to the cache), so a second could pass 0.0025
    ok(mind, "model", "set", "haiku", "--max-cost", "0.0025")
    anthropic.push("usage", input=40, cache_read=0, cache_write=1500)
    assert cli_json(mind, "chat", "-m", "one", "--max-tokens", "400")["cost"]["amount"] > 0.0015
    before = mind_events(mind)
    done = run_pmm("--mind", str(mind), "chat", "-m", "two", "--max-tokens", "400")  # exit code: a process
    assert done.returncode == 5, done.stderr
    err = done.stderr.decode()
    assert "refused before sending" in err and "daily cap" in err and "0.0025 USD" in err
    assert "Traceback" not in err and asked(anthropic) == 1  # nothing was sent ...
    assert mind_events(mind) == before  # ... and nothing written
    failure = json_failure(run_in("--mind", str(mind), "chat", "-m", "two", "--max-tokens", "400",
                                  "--json").stdout, 5)
    assert "daily cap" in failure["error"]["message"]
    assert cli_json(mind, "chat", "-m", "short", "--max-tokens", "20")["cost"]  # a cheaper turn fits


def test_chat_budget_caps_the_run(mind: Path, anthropic: FakeServer) -> None:
    from pmm import errors
    from pmm.services.chat import Chat

    with Chat(mind, lambda _m: None, budget=0.0005, max_tokens=60) as chat:
        chat.turn("one")
        with pytest.raises(errors.BudgetExceeded, match="of its 0.0005 USD --budget"):
            for n in range(20):
                chat.turn(f"turn {n}")
        assert chat.session_usage.answers >= 1 and sum(chat.budget.spent.values()) <= 0.0005
    sent = asked(anthropic)
    assert len(mind_events(mind, "response_sent")) == sent  # every sent turn recorded, none refused one
    code, _, err = pmm_in(mind, "chat", "-m", "x", "--budget", "0.000001")
    assert code == 5 and "--budget" in err and asked(anthropic) == sent


def test_budget_and_cap_need_prices_and_bad_values_are_refused(mind: Path) -> None:
    code, _, err = pmm_in(mind, "chat", "-m", "hi", "--budget", "1")
    assert code == 2 and "--budget needs prices" in err
    code, _, err = pmm_in(mind, "model", "add", "x", "ollama:llama3.1", "--max-cost", "1")
    assert code == 2 and "--max-cost needs prices" in err
    code, _, err = pmm_in(mind, "model", "add", "x", "ollama:llama3.1", "--price-in", "1", "--currency", "dollars")
    assert code == 2 and "ISO 4217" in err
    added = cli_json(mind, "model", "add", "y", "ollama:llama3.1", "--price-in", "1", "--price-out", "2",
                     "--currency", "gbp", "--max-cost", "3")
    assert (added["currency"], added["max_cost"]) == ("GBP", 3)
    assert "1 in, 2 out, 1 cache read, 1 cache write" in ok(mind, "model", "info", "y", "--offline")


def test_autonomous_run_honours_its_budget(mind: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reflection = json.dumps({"reflection": "A quiet day.", "traits": [], "open": [], "close": []})
    with FakeServer("openai", text=reflection) as server:
        ok(mind, "model", "add", "m", "openai-compatible:test-model", "--base-url", server.url, "--use")
        ok(mind, "chat", "-m", "something to reflect on")  # a reflection is due after it
        ok(mind, "model", "set", "m", "--price-in", "1000", "--price-out", "1000")
        before = asked(server)
        code, out, err = pmm_in(mind, "run", "--autonomous", "--interval", "0", "--max-cycles", "3",
                                "--budget", "0.001", "--json")
        assert code == 0, err
        summary = json_data(out)
    assert summary["stopped_by"] == "budget" and summary["reflections"] == 0
    assert asked(server) == before
    assert "this run has spent 0.0000 USD of its 0.0010 USD --budget" in err


def test_the_repl_shows_usage_in_its_toolbar_and_in_detail(mind: Path) -> None:
    """On a terminal the answer streams; this server ignores stream_options.include_usage, so the
    toolbar marks the counts estimated (~) and /usage says so."""
    import os

    from conftest import PMM
    from terminal import Terminal

    with FakeServer("openai", text="Zanzibar first.") as server:
        ok(mind, "model", "add", "srv", "openai-compatible:test-model", "--base-url", server.url,
           "--price-in", "3", "--price-out", "15", "--use")
        server.push("no_usage")
        env = {k: v for k, v in os.environ.items() if k != "PROMPT_TOOLKIT_NO_CPR"}
        term = Terminal([PMM, "--mind", str(mind), "chat"], {**env, "TERM": "xterm-256color"},
                        cols=120, cursor_reports=True)
        try:
            at = term.expect(r"you>")
            term.send("Hi\r")
            at = term.expect(r"Zanzibar first\.", after=at)
            at = term.expect(r" srv · last ~[\d,]+ tokens, 0\.\d+ USD · session ~[\d,]+ tokens, 0\.\d+ USD · /help",
                             after=at)
            term.send("/usage\r")
            at = term.expect(r"Last answer: [\d,]+ in / \d+ out \(estimated\), 0\.\d+ USD", after=at)
            at = term.expect(r"srv costs 3 in, 15 out, 3 cache read, 3 cache write per million tokens \(USD\)",
                             after=at)
            term.expect(r"you>", after=at)
            term.send("/exit\r")
            assert term.wait() == 0
        finally:
            term.kill()
    (meta,) = (e["meta"] for e in mind_events(mind, "response_sent"))
    assert meta["usage_estimated"] is True


def test_a_crafted_currency_is_never_printed(mind: Path) -> None:
    """A mind file from elsewhere may hold any text as a currency: costs show ISO's XXX instead."""
    from pmm.domain.events import Draft
    from pmm.services import opening

    with opening.open_write(mind, lambda _m: None) as opened:
        opened.append([Draft("response_sent", "hi", {
            "provider": "x", "model": "m", "model_name": "m", "latency_ms": 5, "tokens_in": 10, "tokens_out": 10,
            "price_in": 1, "price_out": 1, "currency": "\x1b]0;owned\x07USD"})])
    out = ok(mind, "stats")
    assert "cost 0.00002 XXX" in out and "\x1b" not in out and "owned" not in out
    (row,) = cli_json(mind, "stats")["usage"]
    assert row["cost"][0]["currency"] == "XXX"
