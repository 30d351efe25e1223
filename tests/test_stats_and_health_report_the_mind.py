"""`pmm stats` says in plain English where the mind stands, and `pmm health` checks it.

stats: stage with IAS and GAS, traits, reflections, commitments with their success rate, and
tokens, latency and cost per model, all also in `--json`. health: one line per check; exit 0 on
warnings (7 with `--strict`), 3 when the chain is tampered with, 5 when only a model is
unreachable (`--online`), 4 when there is no mind; without `--online` it talks to no provider.
"""

from __future__ import annotations

import json
import socket
import sqlite3
from pathlib import Path

import pytest
from conftest import json_data, run_in, run_pmm
from provider_servers import PROMPT_TOKENS, FakeServer, split_pieces

from pmm.domain.costs import money
from pmm.domain.events import Draft
from pmm.services import opening

REFLECTION = json.dumps({
    "reflection": "We talked about the garden; I am curious about it.",
    # #5: the chat's message, after init, the model's two events and the session's start
    "traits": [{"trait": "openness", "delta": 0.03, "evidence": [5], "reason": "the garden made me curious"}],
    "open": [], "close": [],
})
PAST = "2000-01-01T00:00:00.000000Z"


def pmm_in(mind: Path, *args: str, run=run_in) -> tuple[int, str, str]:
    done = run("--mind", str(mind), *args)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


def append(mind: Path, *drafts: Draft) -> list[int]:
    with opening.open_write(mind, lambda _m: None) as opened:
        return [e.id for e in opened.append(list(drafts))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def health(mind: Path, *args: str) -> tuple[int, dict]:
    code, out, err = pmm_in(mind, "health", "--json", *args)
    assert "Traceback" not in err
    return code, json_data(out)


def statuses(report: dict) -> dict[str, str]:
    return {c["name"]: c["status"] for c in report["checks"]}


# -- stats -----------------------------------------------------------------------------------------

def test_a_new_mind_in_plain_english(mind: Path) -> None:
    code, out, _ = pmm_in(mind, "stats")
    assert code == 0
    assert "Stage S0: just beginning (IAS 1.00, GAS 0.00)" in out
    assert ("Traits: openness 0.50, conscientiousness 0.50, extraversion 0.50, agreeableness 0.50,"
            " neuroticism 0.50") in out
    assert "Reflections: none yet" in out
    assert "Commitments: no commitments yet" in out
    assert "Models: no answers or reflections yet" in out
    assert "Events: 1" in out  # the lines that were there before stay


def test_stats_tells_stage_traits_reflections_commitments_and_cost(mind: Path) -> None:
    with FakeServer("openai", text=REFLECTION) as server:
        assert pmm_in(mind, "model", "add", "fake", "openai-compatible:test-model", "--base-url",
                      server.url, "--use", "--price-in", "1000", "--price-out", "2000")[0] == 0
        assert pmm_in(mind, "chat", "-m", "I grow tomatoes in my garden.")[0] == 0
        kept, note = append(mind, Draft("commitment_opened", "Ask about the tomatoes", {"source": "user"}),
                            Draft("observation_recorded", "Asked about the tomatoes", {"source": "user"}))
        append(mind, Draft("commitment_closed", "I asked.", {"commitment": kept, "evidence": [note]}),
               Draft("commitment_opened", "Water the plants", {"source": "user", "due": PAST}),
               Draft("commitment_opened", "Learn about compost", {"source": "user"}))
        code, out, err = pmm_in(mind, "run", "--autonomous", "--max-cycles", "1", "--interval", "0")
        assert code == 0, err
    out = pmm_in(mind, "stats")[1]
    assert "Stage S0: just beginning (IAS " in out
    assert "Traits: openness 0.53, conscientiousness 0.50," in out
    assert "Reflections: 1, the last " in out and " s ago" in out
    assert "Commitments: 3 opened, 1 closed (50% success), 1 expired, 1 open" in out
    # The answer and the reflection both went through this model (the fake answers every
    # request with REFLECTION's pieces and PROMPT_TOKENS prompt tokens).
    tokens_in, tokens_out = 2 * PROMPT_TOKENS, 2 * len(split_pieces(REFLECTION))
    cost = (tokens_in * 1000 + tokens_out * 2000) / 1_000_000
    line = next(x for x in out.splitlines() if "openai-compatible:test-model:" in x)
    assert line.strip().startswith(f"openai-compatible:test-model: 1 answer, 1 reflection, {tokens_in} tokens in,"
                                   f" {tokens_out} out, ")
    assert " s average, cost " in line and line.endswith(f"cost {money(cost, 'USD')}")

    report = json_data(pmm_in(mind, "stats", "--json")[1])
    for key in ("mind", "mind_id", "name", "events", "head", "sessions", "messages", "responses",
                "observations", "by_kind", "projection_cache"):
        assert key in report  # the keys scripts already read
    assert report["stage"] == "S0" and report["stage_words"] == "just beginning"
    assert set(report["metrics"]) >= {"ias", "gas", "stage", "reflections", "turns", "commitment_success"}
    assert report["metrics"]["reflections"] == 1 and report["metrics"]["turns"] == 1
    assert report["traits"]["openness"] == pytest.approx(0.53)
    assert report["reflections"]["count"] == 1 and report["reflections"]["turns_since"] == 0
    assert report["commitments"] == {"opened": 3, "closed": 1, "expired": 1, "dropped": 0, "open": 1,
                                     "reopened": 0, "success": 0.5}
    (usage,) = report["usage"]
    assert usage["model"] == "openai-compatible:test-model" and usage["answers"] == 1
    assert usage["reflections"] == 1
    assert usage["tokens_in"] == tokens_in and usage["tokens_out"] == tokens_out
    assert usage["cost"] == [{"amount": pytest.approx(cost), "saved": 0, "currency": "USD"}]


def test_no_cost_without_prices(mind: Path) -> None:
    with FakeServer("openai", text="Hello.") as server:
        pmm_in(mind, "model", "add", "fake", "openai-compatible:test-model", "--base-url", server.url, "--use")
        assert pmm_in(mind, "chat", "-m", "Hi")[0] == 0
    out = pmm_in(mind, "stats")[1]
    line = next(x for x in out.splitlines() if "openai-compatible:test-model:" in x)
    assert "cost" not in line
    assert json_data(pmm_in(mind, "stats", "--json")[1])["usage"][0]["cost"] == []


# -- health ----------------------------------------------------------------------------------------

def test_a_healthy_mind_passes_every_check(mind: Path) -> None:
    before = mind.read_bytes()
    code, out, _ = pmm_in(mind, "health")
    assert code == 0
    lines = out.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "✓ file", "✓ schema", "✓ chain", "✓ projection cache", "✓ search index",
        "✓ recall vectors", "✓ reflection", "✓ commitments"]
    code, report = health(mind, "--strict")
    assert code == 0 and report["healthy"] is True
    assert statuses(report) == {"file": "ok", "schema": "ok", "chain": "ok", "projection cache": "ok",
                                "search index": "ok", "recall vectors": "ok", "reflection": "ok",
                                "commitments": "ok"}
    assert all(c["detail"] for c in report["checks"])
    assert mind.read_bytes() == before  # a read command


def test_missing_or_foreign_files_are_exit_4(tmp_path: Path) -> None:
    code, _, err = pmm_in(tmp_path / "absent.db", "health", run=run_pmm)  # a real process: exit 4
    assert code == 4 and "no mind file" in err
    assert not (tmp_path / "absent.db").exists()
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    code, _, err = pmm_in(other, "health")
    assert code == 4 and "not a pmm mind" in err and "Traceback" not in err


def test_a_tampered_chain_fails_with_exit_3(mind: Path) -> None:
    for i in range(3):
        assert pmm_in(mind, "remember", f"note {i}")[0] == 0
    conn = sqlite3.connect(mind, isolation_level=None)
    conn.execute("DROP TRIGGER events_no_update")
    (content,) = conn.execute("SELECT content FROM events WHERE id = 3").fetchone()
    conn.execute("UPDATE events SET content = ? WHERE id = 3", (content[:-1] + "X",))
    conn.close()
    code, report = health(mind)
    assert code == 3 and report["healthy"] is False
    chain = next(c for c in report["checks"] if c["name"] == "chain")
    assert chain["status"] == "fail" and "event 3" in chain["detail"]
    code, out, _ = pmm_in(mind, "health")
    assert code == 3 and "✗ chain: event 3" in out


def test_overdue_commitment_warns_and_strict_fails(mind: Path) -> None:
    (opened,) = append(mind, Draft("commitment_opened", "x", {"source": "user", "due": PAST}))
    code, out, _ = pmm_in(mind, "health")
    assert code == 0
    assert f"! commitments: 1 of 1 open overdue (#{opened}: its due time 2000-01-01 00:00 UTC passed)" in out
    code, report = health(mind)
    assert code == 0 and report["healthy"] is True and statuses(report)["commitments"] == "warn"
    code, report = health(mind, "--strict")
    assert code == 7 and report["healthy"] is False and report["exit_code"] == 7
    assert pmm_in(mind, "health", "--strict")[0] == 7


def test_never_reflected_with_messages_waiting_warns(mind: Path) -> None:
    append(mind, Draft("message_received", "hello", {"source": "pmm"}))
    code, report = health(mind)
    assert code == 0 and statuses(report)["reflection"] == "warn"
    detail = next(c["detail"] for c in report["checks"] if c["name"] == "reflection")
    assert "never reflected" in detail and "1 user message waiting" in detail


def test_online_checks_the_models_and_unreachable_is_exit_5(mind: Path) -> None:
    with FakeServer("openai") as server:
        assert pmm_in(mind, "model", "add", "fake", "openai-compatible:test-model", "--base-url",
                      server.url, "--use")[0] == 0
        seen = len(server.requests)
        code, report = health(mind)
        assert code == 0 and len(server.requests) == seen  # no --online: no request at all
        assert not any(c["name"].startswith("model") for c in report["checks"])
        code, report = health(mind, "--online")
        assert code == 0 and len(server.requests) > seen
        assert statuses(report)["model (chat)"] == "ok" and statuses(report)["model (reflection)"] == "ok"
    gone = f"http://127.0.0.1:{free_port()}/v1"
    assert pmm_in(mind, "model", "add", "gone", "openai-compatible:test-model", "--base-url", gone,
                  "--use")[0] == 0  # a warning: it could not be asked for its hash
    code, out, _ = pmm_in(mind, "health")
    assert code == 0  # offline, nothing notices
    code, report = health(mind, "--online")
    assert code == 5 and report["healthy"] is False
    assert statuses(report)["model (chat)"] == "fail"
    assert "cannot reach" in next(c["detail"] for c in report["checks"] if c["name"] == "model (chat)")
    code, out, _ = pmm_in(mind, "health", "--online")
    assert code == 5 and "✗ model (chat): gone" in out


def test_a_model_failure_among_other_failures_is_exit_5_or_3(mind: Path) -> None:
    gone = f"http://127.0.0.1:{free_port()}/v1"
    pmm_in(mind, "model", "add", "gone", "openai-compatible:test-model", "--base-url", gone, "--use")
    append(mind, Draft("commitment_opened", "x", {"source": "user", "due": PAST}))
    assert health(mind, "--online")[0] == 5  # the overdue commitment only warns
    assert health(mind, "--online", "--strict")[0] == 5  # a failure outranks a (strict) warning
    conn = sqlite3.connect(mind, isolation_level=None)
    conn.execute("DROP TRIGGER events_no_update")
    conn.execute("UPDATE events SET content = 'forged' WHERE id = 1")
    conn.close()
    assert health(mind, "--online")[0] == 3  # the chain wins
