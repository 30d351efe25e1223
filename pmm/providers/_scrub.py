"""Keeping API keys out of error messages, whatever form a server or a library quotes them in."""

from __future__ import annotations

import json
import re
import urllib.parse

from pmm import errors

# A piece of a key shorter than this is not scrubbed on its own: it would blank common words.
MIN_SECRET_FRAGMENT = 6


def secret_forms(secret: str) -> list[str]:
    """The ways ``secret`` can show up in a message, longest first: as is, its escaped forms
    (``repr``, ``ascii``, JSON, bytes, URL-encoded: how a library quotes a bad header value)
    and, for a key with a newline or other control characters in it, each piece between them."""
    forms = {secret, repr(secret)[1:-1], ascii(secret)[1:-1], json.dumps(secret)[1:-1],
             json.dumps(secret, ensure_ascii=False)[1:-1], repr(secret.encode())[2:-1],
             urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)}
    for form in list(forms):
        forms.update(part for part in re.split(r"[\s\x00-\x1f\x7f]+|\\[nrtx0-9]", form)
                     if len(part) >= MIN_SECRET_FRAGMENT)
    return sorted((f for f in forms if f), key=len, reverse=True)


def scrub_text(text: str, secrets: list[str]) -> str:
    for form in secrets:
        text = text.replace(form, "***")
    return text


def scrub(exc: errors.PmmError, secret: str | None) -> None:
    """Blank ``secret``, in any of its forms, in the message and hint: a last defence if a server
    echoed the key or a library quoted it in an error."""
    if not secret:
        return
    forms = secret_forms(secret)
    exc.message = scrub_text(exc.message, forms)
    exc.args = (exc.message, *(scrub_text(a, forms) if isinstance(a, str) else a for a in exc.args[1:]))
    if exc.hint:
        exc.hint = scrub_text(exc.hint, forms)
