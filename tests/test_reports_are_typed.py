"""What a service hands the CLI is typed: no public function or method in pmm/services/ returns
``Any`` (``dict[str, Any]`` included), no report field is ``Any``, and no CLI renderer takes a
``dict[str, Any]``. A report the CLI reads by key is a ``TypedDict`` (or a dataclass), so a
renamed key is a mypy error instead of a ``KeyError`` in front of a user. Read from the source
with ast: nothing is imported or run."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "pmm"

# The only untyped values that may cross, each with why. Keys: "module.py:Qualified.name".
ALLOWED = {
    # The summary event's meta as stored (its kind's declaration), with its id, text and model.
    "consolidation.py:Summary.as_json": "an event's meta, passed through",
    # A foreign export's conversations, as decoded: hostile JSON that its importer checks field by field.
    "chat_import_read.py:items": "untrusted JSON values, checked by the importer that reads them",
}
# Report fields that hold an event's meta (or fields spread from one) as stored: ``Meta``.
META_FIELDS = {"meta", "reflection", "summary", "summaries"}
UNTYPED = {"Any", "Meta"}


def _names(annotation: ast.expr) -> set[str]:
    found = set()
    for node in ast.walk(annotation):
        if isinstance(node, ast.Name):
            found.add(node.id)
        elif isinstance(node, ast.Attribute):
            found.add(node.attr)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):  # a quoted annotation
            try:
                found |= _names(ast.parse(node.value, mode="eval").body)
            except SyntaxError:  # an option's help text inside Annotated[...]
                pass
    return found


def _bare(annotation: ast.expr) -> bool:
    """``dict`` or ``list`` with nothing said of what it holds."""
    return isinstance(annotation, ast.Name) and annotation.id in {"dict", "list", "object"}


def _public(tree: ast.Module) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and not node.name.startswith("_"):
            yield node.name, node
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and not item.name.startswith("_"):
                    yield f"{node.name}.{item.name}", item


def _base_names(node: ast.ClassDef) -> set[str]:
    return {b.id if isinstance(b, ast.Name) else b.attr if isinstance(b, ast.Attribute) else ""
            for b in node.bases}


def _typed_dicts(trees: list[ast.Module]) -> Iterator[ast.ClassDef]:
    """Every TypedDict class, also those built on another module's (``reports.PromptJson``)."""
    classes = [n for tree in trees for n in tree.body if isinstance(n, ast.ClassDef)]
    reports = {"TypedDict"}
    while True:  # a report's subclasses are reports, to a fixed point
        more = {n.name for n in classes if _base_names(n) & reports} - reports
        if not more:
            break
        reports |= more
    yield from (n for n in classes if _base_names(n) & reports)


def _modules() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted((PKG / "services").glob("*.py")):
        yield path.name, ast.parse(path.read_text(), filename=str(path))


def test_no_service_returns_an_untyped_value() -> None:
    found = []
    for module, tree in _modules():
        for name, function in _public(tree):
            key = f"{module}:{name}"
            returns = function.returns
            if returns is None:
                found.append(f"{key}: no return annotation")
            elif key not in ALLOWED and (_names(returns) & UNTYPED or _bare(returns)):
                found.append(f"{key} -> {ast.unparse(returns)}")
    assert not found, "untyped service results (type the report, or allow it in ALLOWED with why):\n" \
        + "\n".join(found)


def test_report_fields_are_typed() -> None:
    modules = dict(_modules())
    where = {id(node): module for module, tree in modules.items() for node in tree.body}
    found = []
    reports = list(_typed_dicts(list(modules.values())))
    for report in reports:
        for item in report.body:
            if not isinstance(item, ast.AnnAssign) or not isinstance(item.target, ast.Name):
                continue
            names, field = _names(item.annotation), item.target.id
            if "Any" in names or ("Meta" in names and field not in META_FIELDS) or _bare(item.annotation):
                found.append(f"{where[id(report)]}:{report.name}.{field}: {ast.unparse(item.annotation)}")
    assert len(reports) >= 40, f"only {len(reports)} TypedDict reports found: is the scan still finding them?"
    assert not found, "untyped report fields:\n" + "\n".join(found)


def test_cli_renderers_take_typed_reports() -> None:
    found = []
    for path in sorted((PKG / "cli").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef):
                continue
            for arg in [*node.args.args, *node.args.kwonlyargs]:
                if arg.annotation is not None and "Any" in _names(arg.annotation) \
                        and "dict" in _names(arg.annotation):
                    found.append(f"{path.name}:{node.name}({arg.arg}: {ast.unparse(arg.annotation)})")
    assert not found, "CLI renderers reading an untyped dict:\n" + "\n".join(found)


def test_the_scan_sees_an_untyped_report() -> None:
    """The checks above would catch the shapes they exist for."""
    tree = ast.parse("def stats() -> dict[str, Any]: ...\n"
                     "class Box:\n    def to_json(self) -> 'dict[str, Any]': ...\n"
                     "class R(TypedDict):\n    x: Any\n")
    flagged = [name for name, f in _public(tree) if f.returns is not None and _names(f.returns) & UNTYPED]
    assert flagged == ["stats", "Box.to_json"]
    assert [r.name for r in _typed_dicts([tree])] == ["R"]
