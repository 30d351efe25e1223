"""Where semantic recall's plain-Python path stops paying (pmm.services.semantic.PLAIN_BUDGET_US).

    .venv/bin/python bench/bench_semantic_paths.py [--spans 250,1000,2000,4000,8000] [--missing 0,20,80]
        [--data ../shared/data/locomo-dev]

For each span size, a mind of that many notes (the dev conversations' turns, or generated
sentences without them) with every vector stored but the newest ``missing`` ones, then one
`nearest` (a reader, weighted as chat asks) in a fresh interpreter per path: the CPU time of
the call, loads included (the plain path's tokenizer tables from the cache; the numpy path's
numpy import and ``tokenizers`` load), median of 5. The plain path pays per vector and per
character it embeds; the numpy path mostly its start.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pmm.domain import events as ev  # noqa: E402
from pmm.domain.events import Draft  # noqa: E402
from pmm.ledger.store import Ledger  # noqa: E402
from pmm.services import opening, semantic  # noqa: E402

CALL = """
import sys, time
from pathlib import Path
from pmm.ledger.store import Ledger
from pmm.services import ranking, semantic
semantic.PLAIN_BUDGET_US = semantic.PLAIN_SPAN = 10**12 if sys.argv[2] == "plain" else -1
with Ledger.open(Path(sys.argv[1])) as mind:
    start = time.process_time()
    found = semantic.nearest(mind, "did my friend ever talk about a dog", ranking.RECALL_KINDS, 50,
                             weights={"friend": 1.0, "talk": 1.0, "dog": 3.0})
    print((time.process_time() - start) * 1000, "numpy" in sys.modules)
"""


def texts(data: Path) -> list[str]:
    found = []
    for path in sorted(data.glob("conv-*.json")):
        for key, turns in json.loads(path.read_text()).items():
            if key.startswith("session_") and isinstance(turns, list):
                found += [t["text"] for t in turns]
    return found or [f"note {n}: the garden needs water in the morning, and the dog a walk" for n in range(50)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spans", default="250,1000,2000,4000,8000")
    ap.add_argument("--missing", default="0,20,80")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "locomo-dev")
    args = ap.parse_args()
    pool = texts(args.data)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PMM_SEMANTIC": "1"}
    load = os.getloadavg()
    print(f"nearest() CPU ms, fresh interpreter, median of 5; load {load[0]:.2f}; plain path budget"
          f" {semantic.PLAIN_BUDGET_US / 1000:.0f} ms")
    print(f"{'span':>6} {'missing':>8} {'tokens':>7} {'plain':>8} {'numpy':>8}  {'estimate':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for span in (int(s) for s in args.spans.split(",")):
            notes = [pool[n % len(pool)] + (f" ({n})" if n >= len(pool) else "") for n in range(span)]
            for missing in (int(m) for m in args.missing.split(",")):
                path = Path(tmp) / f"m{span}-{missing}.db"
                with opening.init(path, None) as mind:
                    mind.append([Draft(ev.OBSERVATION_RECORDED.name, t, {"source": "user"})
                                 for t in notes[:span - missing]])
                with Ledger.open(path, write=True) as mind:
                    semantic.fill(mind)
                with Ledger.open(path, write=True) as mind:  # the newest, with no vector stored
                    mind.append([Draft(ev.OBSERVATION_RECORDED.name, t, {"source": "user"})
                                 for t in notes[span - missing:]])
                plain = semantic._load_plain()
                assert plain is not None, "the plain path's tables load"
                chars = sum(len(plain[0].tokens(t)) for t in notes[span - missing:])
                row = {}
                for mode in ("plain", "numpy"):
                    runs = [subprocess.run([sys.executable, "-c", CALL, str(path), mode], env=env,
                                           capture_output=True, text=True, check=True).stdout.split()
                            for _ in range(5)]
                    assert all((r[1] == "True") == (mode == "numpy") for r in runs), runs
                    row[mode] = statistics.median(float(r[0]) for r in runs)
                estimate = (span * semantic.PLAIN_VECTOR_US + chars * semantic.PLAIN_TOKEN_US) / 1000
                print(f"{span:>6} {missing:>8} {chars:>7} {row['plain']:>8.1f} {row['numpy']:>8.1f}"
                      f"  {estimate:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
