"""Option types shared by several commands, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

MindOpt = Annotated[Optional[Path], typer.Option(
    "--mind", help="Mind file (default: $PMM_MIND, else the user data dir's mind.db).",
    show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]
