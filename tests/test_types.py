"""pmm/ stays mypy-clean under every strict check; the projection states are typed deep enough
that a mistyped key is an error, not a KeyError at run time, and those types tell the truth about
the states folded (and read back from the cache's JSON).

mypy runs on the checkout's own cache (.mypy_cache, what a developer's `mypy pmm` warms): cold it
takes ~6 s of CPU, warm under 1 s.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints, is_typeddict

from eventgen import DRAFTS
from hypothesis import given, settings
from hypothesis import strategies as st

from pmm.domain import projections
from pmm.domain.checks import check_draft
from pmm.domain.events import Draft, Event
from pmm.domain.states import States

ROOT = Path(__file__).resolve().parent.parent


def _mypy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mypy", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def test_pmm_is_clean_under_strict_mypy() -> None:
    mypy = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    assert mypy["strict"] is True
    proc = _mypy("pmm")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Success: no issues found" in proc.stdout


def _problems(tp: Any, value: Any, at: str) -> list[str]:
    """Where ``value`` is not of type ``tp`` (the subset of types pmm.domain.states uses)."""
    if is_typeddict(tp):
        if not isinstance(value, dict):
            return [f"{at}: {value!r} is not a {tp.__name__}"]
        keys = set(value)
        found = [f"{at}: {tp.__name__} misses {k!r}" for k in sorted(tp.__required_keys__ - keys)]
        found += [f"{at}: {tp.__name__} has no key {k!r}"
                  for k in sorted(keys - tp.__required_keys__ - tp.__optional_keys__)]
        hints = get_type_hints(tp)
        for key in sorted(keys & set(hints)):
            found += _problems(hints[key], value[key], f"{at}.{key}")
        return found
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        return [] if any(not _problems(a, value, at) for a in args) else [f"{at}: {value!r} is not {tp}"]
    if origin is Literal:
        return [] if value in args else [f"{at}: {value!r} is not one of {args}"]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{at}: {value!r} is not a dict"]
        return [p for k, v in value.items()
                for p in [*_problems(args[0], k, f"{at} key"), *_problems(args[1], v, f"{at}[{k!r}]")]]
    if origin is list:
        if not isinstance(value, list):
            return [f"{at}: {value!r} is not a list"]
        return [p for i, v in enumerate(value) for p in _problems(args[0], v, f"{at}[{i}]")]
    if tp is float:  # an int is a float to mypy
        ok = type(value) in (int, float)
    elif tp is type(None):
        ok = value is None
    else:
        ok = type(value) is tp
    return [] if ok else [f"{at}: {value!r} is not {tp.__name__}"]


def _events(drafts: list[Draft]) -> list[Event]:
    out = []
    for i, draft in enumerate(drafts, start=1):
        check_draft(draft)
        ts = f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}.000000Z"
        out.append(Event(i, ts, draft.kind, draft.content, json.dumps(draft.meta), "", ""))
    return out


# Every nested shape at least once: commitments in each status (one closed by a reflection, then
# reopened by its retraction), a kept summary, usage, models added, switched and removed, notes.
SCENARIO = [
    Draft("mind_created", "born", {"pmm_version": "0.1.0", "name": "Ada"}),
    Draft("message_received", "hi", {}),
    Draft("message_received", "then", {"source": "chatgpt", "original_ts": "2020-01-01T00:00:00.000000Z"}),
    Draft("response_sent", "hello", {"provider": "offline", "model": "echo", "latency_ms": 5,
                                     "tokens_in": 3, "tokens_out": 2}),
    Draft("model_added", "m = ollama:llama3", {"name": "m", "provider": "ollama", "model": "llama3",
                                               "base_url": "http://127.0.0.1:11434", "price_in": 1}),
    Draft("model_switched", "m for chat", {"name": "m", "provider": "ollama", "model": "llama3",
                                           "role": "chat", "model_hash": "abc"}),
    Draft("model_added", "n = ollama:qwen", {"name": "n", "provider": "ollama", "model": "qwen"}),
    Draft("model_switched", "n to reflect", {"name": "n", "provider": "ollama", "model": "qwen",
                                             "role": "reflection"}),
    Draft("model_removed", "n", {"name": "n"}),
    Draft("persona_set", "be kind", {}),
    Draft("note_pinned", "tea", {}),
    Draft("note_pinned", "coffee", {}),
    Draft("note_unpinned", "", {"note": 11}),
    Draft("commitment_opened", "write", {"source": "user", "due": "2026-02-01T00:00:00.000000Z"}),  # 14
    Draft("commitment_opened", "call", {"source": "user"}),  # 15
    Draft("commitment_opened", "read", {"source": "user"}),  # 16
    Draft("reflection_recorded", "I grew", {"first_id": 1, "last_id": 16, "trigger": "cadence",
                                            "provider": "offline", "model": "echo", "latency_ms": 9}),  # 17
    Draft("trait_adjusted", "more open", {"trait": "openness", "delta": 0.05, "reflection": 17}),
    Draft("commitment_opened", "walk", {"source": "reflection", "reflection": 17}),  # 19
    Draft("commitment_closed", "wrote it", {"commitment": 14, "evidence": [18], "reflection": 17}),
    Draft("commitment_expired", "", {"commitment": 15, "reason": "due"}),
    Draft("commitment_closed", "read it", {"commitment": 16, "evidence": [20]}),
    Draft("commitment_reopened", "again", {"commitment": 16}),
    Draft("summary_recorded", "so far", {"covers": [17], "trigger": "cadence"}),
    Draft("reflection_recorded", "and more", {"first_id": 17, "last_id": 24, "trigger": "cadence"}),
    Draft("reflection_retracted", "wrong", {"reflection": 17, "source": "user"}),
    Draft("trait_adjusted", "calmer", {"trait": "neuroticism", "delta": -0.02}),
    Draft("commitment_dropped", "no", {"commitment": 16}),
]


def test_the_state_types_describe_the_states_folded_and_cached() -> None:
    states = projections.replay(_events(SCENARIO))
    assert states["commitments"]["current"] == {"closed": 0, "expired": 1, "dropped": 2}
    assert states["commitments"]["open"]["14"]["text"] == "write"  # reopened by the retraction
    assert states["summaries"]["kept"] == [] and states["summaries"]["count"] == 1
    assert set(states["models"]["models"]) == {"m"} and states["models"]["active"]["reflection"] is None
    cached = json.loads(json.dumps(states, sort_keys=True))
    assert cached == states
    assert _problems(States, cached, "states") == []
    summarised = projections.replay(_events(SCENARIO[:24]))
    assert len(summarised["summaries"]["kept"]) == 1
    assert _problems(States, summarised, "states") == []
    wrong = {**cached, "identity": {**cached["identity"], "names": "2", "nick": None}}
    assert _problems(States, wrong, "states") == ["states.identity: IdentityState has no key 'nick'",
                                                  "states.identity.names: '2' is not int"]


@settings(max_examples=60, deadline=None)
@given(st.lists(DRAFTS, max_size=40))
def test_the_state_types_hold_for_any_events_their_kinds_accept(drafts: list[Draft]) -> None:
    assert _problems(States, projections.replay(_events(drafts)), "states") == []


def test_a_mistyped_state_key_is_a_type_error() -> None:
    program = ("from pmm.domain.projections import replay\n"
               "states = replay([])\n"
               "ok: float = states['traits']['values']['openness']\n"
               "states['traits']['valeus']\n"
               "states['commitments']['open']['1']['opened_ts']\n")
    proc = _mypy("-c", program)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    errors = [line for line in proc.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 2, proc.stdout
    assert errors[0].startswith("<string>:4:") and 'has no key "valeus"' in errors[0]
    assert errors[1].startswith("<string>:5:") and 'has no key "opened_ts"' in errors[1]
