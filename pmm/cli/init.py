"""``pmm init``: a new mind file."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from pmm.cli import output
from pmm.cli.options import JsonOpt, MindOpt, mind_path


def register(app: typer.Typer) -> None:
    app.command()(init)


def init(
    name: Annotated[Optional[str], typer.Option("--name", help="A name for the new mind.")] = None,
    mind: MindOpt = None,
    json: JsonOpt = False,
) -> None:
    """Create a new mind file (never overwrites one)."""
    from pmm.services import opening

    path = mind_path(mind)
    if name is not None:
        name = opening.valid_name(name)
    with opening.init(path, name) as created:
        mind_id = created.mind_id
    if json:
        output.emit_json({"mind": str(path), "mind_id": mind_id, "name": name})
    else:
        output.message(f"Created a new mind at {path}" + (f" named {name}" if name else ""))
