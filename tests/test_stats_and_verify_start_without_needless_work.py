"""`pmm stats` and `pmm verify` do on a small mind about what `pmm log` does (issue 15: every
real command under 100 ms; bench/bench_startup.py measures the time). Checked by what they
import, not by a clock:

- neither loads platformdirs when the XDG directories are plain absolute paths on Linux
  (pmm.paths answers those itself; ~3 ms with tempfile and random);
- stats reads the models' prices from the state: not pmm.services.models, the provider
  registry, trust or usage (~6 ms), even for a mind whose usage it prices;
- a plain verify reads no signature and no export: not pmm.services.signatures,
  pmm.ledger.jsonl or base64 (a checkpoint's base64 form is for signatures), nor the sessions
  table's check (--deep's), nor the projections, their cache or their snapshots (--deep
  compares those with a replay);
- log reads events and folds nothing: no projections, no cache, no snapshots (its --as-of
  does), and none of the model machinery;
- none of them imports Typer (pmm.cli.fast reads their command lines) or uuid (it imports
  platform, ~2 ms: pmm makes its random ids itself, as uuid4 would).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from provider_servers import FakeServer

ROOT = Path(__file__).resolve().parent.parent

RUN = """
import json, sys
sys.argv = ["pmm", *json.loads(sys.argv[1])]
from pmm.cli.entry import main
try:
    main()
except SystemExit as exc:
    assert not exc.code, exc.code
sys.stdout.flush()
sys.stderr.write("\\n" + json.dumps(sorted(m for m, v in sys.modules.items() if v is not None)))
"""

NOT_FOR_STATS = ["platformdirs", "tempfile", "typer", "uuid", "platform", "pmm.services.models", "pmm.providers.registry",
                 "pmm.services.trust", "pmm.services.usage", "pmm.services.files"]
PROJECTIONS = ["pmm.domain.projections", "pmm.domain.growth", "pmm.ledger.folded", "pmm.ledger.cache",
               "pmm.ledger.past"]
NOT_FOR_VERIFY = ["platformdirs", "tempfile", "typer", "uuid", "platform", "pmm.services.signatures", "pmm.ledger.jsonl",
                  "pmm.services.files", "base64", "pmm.ledger.sessions", *PROJECTIONS]
NOT_FOR_LOG = ["platformdirs", "tempfile", "typer", "uuid", "platform", "pmm.services.timetravel", "pmm.services.models",
               "pmm.providers.registry", "pmm.services.files", *PROJECTIONS]


def _env(tmp_path: Path) -> dict[str, str]:
    return {"PMM_MIND": str(tmp_path / "mind.db"), "XDG_STATE_HOME": str(tmp_path / "state"),
            "XDG_DATA_HOME": str(tmp_path / "data"), "XDG_CONFIG_HOME": str(tmp_path / "config"),
            "XDG_CACHE_HOME": str(tmp_path / "cache"), "HOME": str(tmp_path), "PMM_SEMANTIC": "0",
            "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}


@pytest.fixture(scope="module")
def mind(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A small mind with a priced model that has answered: stats has usage to price."""
    tmp_path = tmp_path_factory.mktemp("mind")
    env = _env(tmp_path)
    with FakeServer("openai", text="A short answer.") as server:
        for args in (["init", "--name", "Ada"], ["remember", "the garden needs water in the morning"],
                     ["model", "add", "loop", "openai-compatible:test-model", "--base-url", server.url,
                      "--price-in", "3", "--price-out", "15", "--use"],
                     ["model", "trust", "loop"], ["chat", "-m", "an earlier turn"]):
            made = subprocess.run([sys.executable, "-m", "pmm", "-q", *args], capture_output=True, env=env)
            assert made.returncode == 0, made.stderr
    return tmp_path


def _modules(mind: Path, args: list[str]) -> tuple[str, set[str]]:
    proc = subprocess.run([sys.executable, "-c", RUN, json.dumps(args)], capture_output=True,
                          text=True, env=_env(mind))
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, set(json.loads(proc.stderr.strip().splitlines()[-1]))


@pytest.mark.skipif(sys.platform != "linux", reason="pmm.paths answers for Linux only")
@pytest.mark.parametrize("args", [["stats"], ["stats", "--json"]])
def test_stats_loads_no_model_machinery_and_no_platformdirs(mind: Path, args: list[str]) -> None:
    out, loaded = _modules(mind, args)
    assert "pmm.services.stats" in loaded and "sqlite3" in loaded  # it did run
    assert [m for m in NOT_FOR_STATS if m in loaded] == []
    # ... and it still priced the answer: 3 and 15 per million tokens
    if args[-1] == "--json":
        (row,) = json.loads(out)["data"]["usage"]
        assert row["model"] == "openai-compatible:test-model" and row["cost"][0]["amount"] > 0
    else:
        assert ", cost 0.000081 USD" in out  # 12 tokens in at 3, 3 out at 15 per million


@pytest.mark.skipif(sys.platform != "linux", reason="pmm.paths answers for Linux only")
@pytest.mark.parametrize("args", [["verify"], ["verify", "--json"]])
def test_a_plain_verify_reads_no_signature_code_and_no_platformdirs(mind: Path, args: list[str]) -> None:
    out, loaded = _modules(mind, args)
    assert "pmm.services.integrity" in loaded and "pmm.services.witness" in loaded  # it did check
    assert [m for m in NOT_FOR_VERIFY if m in loaded] == []
    assert "witness" in out


@pytest.mark.skipif(sys.platform != "linux", reason="pmm.paths answers for Linux only")
@pytest.mark.parametrize("args", [["log"], ["log", "--json"], ["log", "-n", "1", "--kind", "observation_recorded"]])
def test_log_folds_nothing(mind: Path, args: list[str]) -> None:
    out, loaded = _modules(mind, args)
    assert "pmm.services.browse" in loaded and "sqlite3" in loaded  # it did run
    assert [m for m in NOT_FOR_LOG if m in loaded] == []
    assert "the garden needs water" in out


def test_verify_deep_and_log_as_of_still_replay(mind: Path) -> None:
    """What the plain commands leave out is still there when asked for."""
    out, loaded = _modules(mind, ["verify", "--deep", "--json"])
    assert {"pmm.domain.projections", "pmm.ledger.folded"} <= loaded
    assert json.loads(out)["data"]["deep"]["cache_matches_replay"] is True
    out, loaded = _modules(mind, ["log", "--as-of", "2"])
    assert "pmm.services.timetravel" in loaded and "pmm.ledger.past" in loaded
    assert "the garden needs water" in out


def test_stats_prices_are_the_models_prices() -> None:
    """stats reads the prices from the state, models.known from Model objects: the same
    prices per label, in the same order of precedence, whatever a (crafted) mind holds."""
    from pmm.services import models, stats

    def fields(provider: str, model: str, **kw: Any) -> dict[str, Any]:
        return {"provider": provider, "model": model, **kw}

    cases: list[dict[str, Any]] = [
        {"models": {}, "active": {}},
        {"models": {"a": fields("openai", "gpt", price_in=1.0, price_out=2.0)}, "active": {"chat": None}},
        # two names, one label: the first by name wins; a price-less one is skipped
        {"models": {"b": fields("openai", "gpt", price_in=5.0),
                    "a": fields("openai", "gpt"),
                    "c": fields("openai", "gpt", price_out=7.0, currency="EUR", price_cache_read=0.5)},
         "active": {}},
        # `embedded` in models (only a crafted mind) is never priced: the built-in comes first
        {"models": {"embedded": fields("local", "x", price_in=9.0)}, "active": {}},
        # a model only a switch names, twice (two roles), and one the models define
        {"models": {"m": fields("anthropic", "claude", price_in=1.0, price_out=1.0)},
         "active": {"chat": {**fields("ollama", "llama", price_in=0.0, price_out=2.0), "name": "s"},
                    "reflect": {**fields("ollama", "llama", price_in=4.0), "name": "s"},
                    "other": {**fields("anthropic", "claude", price_in=8.0), "name": "t"}}},
        # an odd currency in a crafted mind
        {"models": {"z": fields("openai", "o", price_in=1.0, currency="not money")}, "active": {}},
    ]
    for case in cases:
        states: Any = {"models": {**case, "switches": 0}}
        want = {}
        for model in models.known(states).values():
            if (priced := model.prices()) is not None:
                want.setdefault(model.spec.label, priced)
        assert stats.prices(states) == want, case
        assert list(stats.prices(states)) == list(want), case


PLATFORMDIRS_CHECK = """
import json, platformdirs
from pmm import paths
print(json.dumps([str(paths.state_dir()), platformdirs.user_state_dir("pmm"),
                  str(paths.data_dir()), platformdirs.user_data_dir("pmm"),
                  str(paths.config_dir()), platformdirs.user_config_dir("pmm"),
                  str(paths.default_mind_path()),
                  str(paths.cache_dir()), platformdirs.user_cache_dir("pmm")]))
"""


@pytest.mark.parametrize("xdg", [None, "", "   ", "/abs/dir", "/abs/dir/", "//two/slashes", "relative/dir", "~/tilde"])
@pytest.mark.parametrize("home", [None, "/home/ada", "/home/ada/", "/", "relative-home"])
def test_the_xdg_dirs_are_platformdirs_own(tmp_path: Path, xdg: str | None, home: str | None) -> None:
    """pmm.paths answers the common Linux cases without platformdirs: always its answer."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    for variable in ("XDG_STATE_HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME"):
        if xdg is not None:
            env[variable] = xdg
    if home is not None:
        env["HOME"] = home
    proc = subprocess.run([sys.executable, "-c", PLATFORMDIRS_CHECK], capture_output=True, text=True,
                          env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    ours, theirs, data, their_data, config, their_config, mind, cache, their_cache = json.loads(proc.stdout)
    assert ours == theirs
    assert cache == their_cache
    assert data == their_data
    assert config == their_config
    assert mind == os.path.join(their_data, "mind.db")


def test_random_ids_are_what_uuid4_makes() -> None:
    import uuid

    from pmm.ledger.connection import random_id

    made = {random_id() for _ in range(2000)}
    assert len(made) == 2000
    for one in made:
        parsed = uuid.UUID(hex=one)
        assert parsed.hex == one and parsed.version == 4 and parsed.variant == uuid.RFC_4122
