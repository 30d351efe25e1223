"""Every command that reads events reports how many it read, and they all agree: verify of the
mind and of its export, export's own count, import's count and sign's checkpoint size. (A
`--since` export once verified as "1 events" whatever it held.)"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from conftest import invoke, json_data
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pmm.domain.events import Draft
from pmm.services import opening


def _json(*args: str, input: bytes | None = None) -> dict:
    result = invoke(*args, "--json", input=input)
    assert result.exit_code == 0, result.output
    return json_data(result.stdout)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.integers(1, 6), min_size=0, max_size=4), data=st.data())
def test_every_command_counts_the_events_it_read(batches: list[int], data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        mind = base / "mind.db"
        with opening.init(mind, "Counted") as writer:  # several commits: several witnessed heads
            for size in batches:
                writer.append([Draft("observation_recorded", f"n {i}", {"source": "user"})
                               for i in range(size)])
        total = 1 + sum(batches)
        since = data.draw(st.integers(1, total + 1), label="since")
        expected = total - since + 1

        assert _json("verify", str(mind))["events"] == total
        out = base / "part.jsonl"
        exported = _json("--mind", str(mind), "export", "--since", str(since), "-o", str(out))
        assert exported["events"] == expected
        assert _json("verify", str(out), "--no-witness")["events"] == expected
        assert _json("verify", "-", "--no-witness", input=out.read_bytes())["events"] == expected
        lines = out.read_bytes().splitlines()
        assert len(lines) == expected + 2 and json.loads(lines[-1])["events"] == expected

        whole = base / "whole.jsonl"
        _json("--mind", str(mind), "export", "-o", str(whole))
        imported = _json("--mind", str(base / "copy.db"), "import", str(whole))
        assert imported["appended"] == total and imported["head_id"] == total

        key = base / "key.pem"
        assert invoke("keygen", "-o", str(key)).exit_code == 0
        signed = _json("sign", str(mind), "--key", str(key), "-o", str(base / "m.sig"))
        assert signed["events"] == total
