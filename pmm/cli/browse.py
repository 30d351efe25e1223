"""Reading a mind: ``pmm stats``, ``pmm log``, ``pmm search``."""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING, Annotated, Any, Optional

from pmm.cli import output
from pmm.cli.declare import Argument, Option
from pmm.cli.options import MAX_ID, AsOfOpt, JsonOpt, MindOpt, mind_path

if TYPE_CHECKING:
    import typer

    from pmm.services.commitments import Counts
    from pmm.services.stats import Explained, Need, Reflections, Standing, Stats, Temperament, Usage


def register(app: typer.Typer) -> None:
    for command in (stats, log, search):
        app.command()(command)


def stats(
    explain: Annotated[bool, Option("--explain", help="Also show what IAS and GAS are made of now, part by part, and where they are defined.")] = False,
    as_of: AsOfOpt = None,
    mind: MindOpt = None,
    json: JsonOpt = False,
) -> None:
    """The mind in plain English: stage, traits, reflections, commitments, model usage.

    The stage comes with what IAS (identity stability) and GAS (growth) measure and what the
    next stage needs against what the mind has; --explain adds their parts (--json always has
    them, under "explained"). docs/mind-model.md defines every quantity (install.sh installs it
    as ~/.local/share/doc/pmm/mind-model.md). Span is from the first to the last thing said,
    imported history at its original time; when there are imports, Recorded is when the ledger
    appended its first and last event.
    """
    from pmm.services import opening, stats

    if as_of is None:
        with opening.open_read(mind_path(mind)) as opened:
            report = stats.stats(opened)
    else:
        from pmm.services import timetravel

        with timetravel.opened(mind_path(mind), as_of) as (opened, then):
            output.message(then.said())
            report = stats.stats(opened, then)
    if json:
        output.emit_json(report)
        return
    name = report["name"] or "(unnamed)"
    lines = [
        f"Mind: {name}  ({report['mind_id']})",
        f"File: {report['mind']}  ({report['file_bytes']:,} bytes)",
        f"Events: {report['events']:,}  (head #{report['head_id']} {report['head'][:16]}…)",
        f"Sessions: {report['sessions']:,}   Messages: {report['messages']:,}"
        f"   Responses: {report['responses']:,}   Notes: {report['observations']:,}",
    ]
    lines += _span_lines(report)
    lines += [
        *stage_lines(report["explained"], explain),
        "Traits: " + ", ".join(f"{trait} {value:.2f}" for trait, value in report["traits"].items()),
        _temperament_line(report["temperament"]),
        _standing_line(report["standing"]),
        _reflections_line(report["reflections"]),
        _commitments_line(report["commitments"]),
        *_usage_lines(report["usage"]),
    ]
    output.out("\n".join(lines))


def stage_lines(e: Explained, parts: bool) -> list[str]:
    """The stage with IAS and GAS, what each measures (with ``parts``: what each is made of
    now) and what the next stage needs; ``e`` is ``stats.explain``'s report."""
    stage = e["stage"]
    lines = [f"Stage {stage['stage']}: {stage['words']} (IAS {e['ias']['value']:.2f}, GAS {e['gas']['value']:.2f})"]
    for quantity, q in (("ias", e["ias"]), ("gas", e["gas"])):
        lines.append(f"  {quantity.upper()} {q['value']:.2f}, {q['name']}: {q['measures']}")
        if parts:
            lines += [f"    {p['name'].replace('_', ' ')} {p['value']:.2f}: {p['measures']}" for p in q["parts"]]
    upcoming = e["stage"]["next"]
    if upcoming is None:
        lines.append(f"  {e['stage']['stage']} is the last stage.")
    else:
        needs = [_need(n) for n in upcoming["needs"] if n["at_least"] or not n["met"]]
        lines.append(f"  Next: {upcoming['stage']} ({upcoming['words']}) needs {', '.join(needs)}")
    lines.append(f"  Definitions: {e['definitions']}" if parts else "  What they are made of: pmm stats --explain")
    return lines


def _temperament_line(t: Temperament) -> str:
    """What the traits put in the system prompt (docs/mind-model.md, "Traits in the prompt")."""
    if t["sentences"]:
        return "  In the prompt: " + " ".join(t["sentences"])
    return f"  In the prompt: nothing (every trait is above {t['low_at_most']} and below {t['high_at_least']})"


def _need(n: Need) -> str:
    """One minimum against what the mind has: "15 reflections (has 6)", "IAS at least 0.60 (has 0.85)"."""
    what, need, has = n["what"], n["at_least"], n["has"]
    if isinstance(need, int):
        one = need == 1 and what.endswith("s")
        return f"{need:,} {what[:-1] if one else what} (has {has:,})"
    shown = f"{has:.2f}"
    if not n["met"] and float(shown) >= need:  # just below: rounded, it would read as met
        shown = f"{math.floor(has * 10_000) / 10_000:.4f}"
    return f"{what} at least {need:.2f} (has {shown})"


def _span_lines(report: Stats) -> list[str]:
    if not report["first_ts"]:
        return []
    said = f"Span: {_when(report['first_said'])} to {_when(report['last_said'])}"
    if not report["backdated"]:
        return [said]
    n = report["backdated"]
    return [f"{said} (when said: {output.plural(n, 'imported event')} at their original time)",
            f"Recorded: {_when(report['first_ts'])} to {_when(report['last_ts'])}"]


def _when(ts: str | None) -> str:
    return output.when(ts)  # None only before the first event: no span is shown


def _standing_line(s: Standing) -> str:
    persona = s["persona"]
    said = f"persona #{persona['id']} ({persona['chars']:,} characters)" if persona else "no persona"
    pinned = s["pinned"]
    return f"Standing memory: {said}, {output.plural(pinned, 'pinned note') if pinned else 'no pinned notes'}"


def _reflections_line(r: Reflections) -> str:
    from pmm.services.stats import span

    if not r["count"]:
        return "Reflections: none yet"
    if r["seconds_since_latest"] is None:  # the last 100 retracted, older ones kept: no latest known
        return f"Reflections: {r['count']:,}"
    return f"Reflections: {r['count']:,}, the last {span(r['seconds_since_latest'])} ago"


def _commitments_line(c: Counts) -> str:
    if not c["opened"]:
        return "Commitments: no commitments yet"
    from pmm.cli.commitments import counts_line

    return counts_line(c)


def _usage_lines(rows: list[Usage]) -> list[str]:
    if not rows:
        return ["Models: no answers or reflections yet"]
    lines = ["Models:"]
    from pmm.services.stats import money, saving  # not services.usage: it loads the model machinery

    for row in rows:
        reflections = row.get("reflections", 0)
        also = f", {output.plural(reflections, 'reflection')}" if reflections else ""
        cached = [f"{row.get(k, 0):,} {what}" for k, what in (("cache_read", "cache read"),
                                                              ("cache_write", "cache write")) if row.get(k)]
        cache = f" ({', '.join(cached)})" if cached else ""
        cost = "".join(f", cost {money(c['amount'], c['currency'])}"
                       + (f" ({said})" if (said := saving(c["saved"], c["currency"])) else "")
                       for c in row["cost"])
        lines.append(f"  {row['model']}: {output.plural(row['answers'], 'answer')}{also},"
                     f" {row['tokens_in']:,} tokens in{cache}, {row['tokens_out']:,} out,"
                     f" {row['average_latency_ms'] / 1000:.1f} s average{cost}")
        if row.get("estimated"):
            counted = row["answers"] + reflections
            lines.append(f"    token counts of {row.get('estimated', 0)} of {counted:,} answers and reflections"
                         " are estimates (the provider reported none)")
    return lines


def _complete_kind(incomplete: str) -> list[str]:
    from pmm.services.browse import kinds_starting

    return kinds_starting(incomplete)


DATES = "an event id (digits) or a date: YYYY-MM-DD, YYYY-MM-DDTHH:MM[:SS], today, yesterday (local time; Z or +HH:MM for another zone)"
SinceOpt = Annotated[Optional[str], Option("--since", metavar="ID|DATE", help=f"From this event or time on (inclusive): {DATES}. A date filters on when each event was said (an import: its original time).")]
UntilOpt = Annotated[Optional[str], Option("--until", metavar="ID|DATE", help="Up to this event or to the end of this day, minute or second (inclusive); same forms as --since.")]
OnOpt = Annotated[Optional[str], Option("--on", metavar="DATE", help="Only what was said on this day (or minute, or second), in local time: YYYY-MM-DD, today, yesterday.")]


def log(
    n: Annotated[int, Option("-n", "--number", min=1, max=MAX_ID, help="How many events (the latest of those the filters keep).")] = 20,
    kind: Annotated[Optional[str], Option("--kind", help="Only events of this kind (docs/event-kinds.md lists them; an unknown kind is refused).", autocompletion=_complete_kind)] = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    on: OnOpt = None,
    as_of: AsOfOpt = None,
    mind: MindOpt = None,
    json: JsonOpt = False,
) -> None:
    """Show the latest events in the order recorded.

    The order is the ledger's (by id, oldest first); the time shown is when each event was said,
    in local time, which for an import is its original time, with the day it was imported; a
    chat event also shows its session (the first 8 characters, which `pmm trace` takes).
    --since/--until take an event id (digits) or a date, --on a date; dates filter on when each
    event was said. On a terminal each line is cut to its width; into a pipe each text is cut at 100 characters.
    --json keeps each event as stored (ts: when the ledger recorded it, UTC) and adds said_at.
    --as-of ends the log at that event (the latest events then). See docs/time.md.
    """
    from pmm.services import browse, opening

    window = browse.Window(since, until, on) if (since, until, on) != (None, None, None) else None
    browse.check_kind(kind)
    with contextlib.ExitStack() as stack:
        if as_of is None:
            opened = stack.enter_context(opening.open_read(mind_path(mind)))
        else:
            from pmm.services import timetravel  # replays the projections: only for --as-of

            opened, then = stack.enter_context(timetravel.ending(mind_path(mind), as_of))
            output.message(then.said())
        events = browse.log(opened, n, kind, window)
        gone = opened.forgotten() if opened.tombstones and any(not e.content for e in events) else {}
    if json:
        output.emit_json([browse.event_json(e) for e in events])
        return
    if not events and window is not None:
        output.message("No events in that window.")
    _lines([(e, "(content forgotten)" if e.id in gone else e.content) for e in events])


def search(
    text: Annotated[str, Argument(help="FTS5 query: words, \"phrases\", OR, NOT, prefix*.")],
    limit: Annotated[int, Option("-n", "--limit", min=1, max=MAX_ID, help="At most this many.")] = 20,
    since: SinceOpt = None,
    until: UntilOpt = None,
    on: OnOpt = None,
    mind: MindOpt = None,
    json: JsonOpt = False,
) -> None:
    """Full-text search over everything the mind holds.

    Best match first. The time shown is when each event was said, in local time (an import: its
    original time); --since/--until/--on keep what was said in that window (an id: from or up
    to that event). How many matched is said on stderr ("12 matches (showing 10)"). Of more
    than 10,000 matches only the newest 10,000 are ranked, and stderr says so, without counting
    the rest (--json: ranked_newest). On a terminal each line is cut to its width. --json adds said_at beside ts,
    the time the ledger recorded it.
    """
    from pmm.services import browse, opening

    window = browse.Window(since, until, on) if (since, until, on) != (None, None, None) else None
    with opening.open_read(mind_path(mind)) as opened:
        found = browse.search(opened, text, limit, window)
        hits = found.hits
        # Counted only when it is cheap: --json says no count, and past the ranking's bound the
        # count would read every match (it grew with the mind); "more than" the bound is said.
        total = len(hits)
        if not json and found.ranked is None and len(hits) >= limit:
            total = browse.count(opened, text, window)
    if json:
        output.emit_json([browse.hit_json(e, s, found.ranked) for e, s in hits])
        return
    if not hits:
        output.message("No matches.")
        return
    _lines(hits)
    if found.ranked is not None:
        output.message(f"More than {found.ranked:,} matches (showing {len(hits):,}, the best of the"
                       f" newest {found.ranked:,}; --until reaches older ones)")
        return
    shown = f" (showing {len(hits):,})" if total > len(hits) else ""
    output.message(output.plural(max(total, len(hits)), "match") + shown)


def _lines(rows: list[tuple[Any, str]]) -> None:
    """One line per event: id, when it was said, kind, session, text, cut to the terminal's width.
    The time column is as wide as its widest entry, so a mind without imports looks as it always did."""
    from pmm.services.browse import session_of, when

    times = [when(e) for e, _ in rows]
    cut = 100 if output.width() is None else 10_000  # into a pipe: each text cut at 100 characters
    wide = max(map(len, times), default=0)
    for (e, text), said in zip(rows, times, strict=True):
        session = session_of(e)
        tag = f"[{output.one_line(session[:8], 8)}] " if session else ""
        line = f"#{e.id}  {said:<{wide}}  {e.kind:<20} {tag}{output.one_line(text, cut)}"
        output.out(output.fit(line))
