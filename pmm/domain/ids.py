"""Mind ids: the one check for text that claims to be one, wherever it is read.

pmm makes a mind id as ``uuid.uuid4().hex`` (32 lowercase hex digits). An id read from a mind
file, an export header, a backup or a signature is untrusted text until it passes ``is_mind_id``;
even then no code builds a path from it (the witness names files by a digest of it).
"""

from __future__ import annotations

import re

_MIND_ID = re.compile(r"[0-9a-f]{32}")


def is_mind_id(value: object) -> bool:
    """True for a mind id as pmm makes them; False for anything else (any type)."""
    return isinstance(value, str) and _MIND_ID.fullmatch(value) is not None


