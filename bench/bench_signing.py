"""Sign plus verify of a checkpoint (SPEC section 7: < 10 ms).

    .venv/bin/python bench/bench_signing.py [--rounds 200]

In-process, on a small mind file: read the head, build the checkpoint, sign it (minisign and
SSHSIG), then parse and check the signature and look the signed event up in the chain: the
cryptographic work of `pmm sign` and `pmm verify --sig`, without the full chain walk and
interpreter start-up that those commands add (printed separately, as wall time of the CLI).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pmm.domain import checkpoint  # noqa: E402
from pmm.services import opening, signatures, signing  # noqa: E402

PMM = str(Path(sys.executable).with_name("pmm"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        os.environ["XDG_STATE_HOME"] = str(base / "state")
        mind = base / "mind.db"
        with opening.init(mind, "Bench") as m:
            from pmm.domain.events import Draft

            m.append([Draft("observation_recorded", f"note {i}", {"source": "user"}) for i in range(100)])
        key_path = base / "k.pem"
        signing.keygen(key_path, None)
        key = signing.load_private(key_path, lambda: b"")
        public = signatures.load_public(base / "k.pub.pem")
        for fmt in signing.FORMATS:
            times = []
            for _ in range(args.rounds):
                started = time.perf_counter()
                with opening.open_read(mind) as opened:
                    size, head = opened.head()
                    point = checkpoint.of(opened.mind_id, size, head)
                    text = signing.sign_text(key, point, fmt, "2026-11-21T00:00:00Z")
                    sig = base / "s.sig"
                    sig.write_text(text)
                    signed = signatures.read_signature(sig, public)
                    _, problem = signatures.check_position(signed, opened.mind_id, size, opened.hash_at)
                    assert problem is None
                times.append((time.perf_counter() - started) * 1000)
            times.sort()
            print(f"sign + verify ({fmt}): median {statistics.median(times):.2f} ms, "
                  f"p90 {times[int(len(times) * 0.9)]:.2f} ms over {args.rounds} rounds")
        env = {**os.environ}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        for label, argv in (("pmm sign", [PMM, "sign", str(mind), "--key", str(key_path), "-o", str(base / "c.sig")]),
                            ("pmm verify --sig", [PMM, "verify", str(mind), "--sig", str(base / "c.sig"),
                                                  "--pub", str(base / "k.pub.pem")])):
            walls = []
            for _ in range(11):
                started = time.perf_counter()
                subprocess.run(argv, check=True, capture_output=True, env=env)
                walls.append((time.perf_counter() - started) * 1000)
            print(f"{label} (CLI wall time, 101 events): median {statistics.median(walls):.0f} ms of 11")


if __name__ == "__main__":
    main()
