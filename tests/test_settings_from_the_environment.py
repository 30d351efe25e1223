"""Every environment variable pmm reads is declared once, in pmm/settings.py, and parsed the same
way: a bad value is a usage error (exit 2) naming the variable and what it takes, with a hint,
never silently ignored; the man page's ENVIRONMENT table is made from the same declarations.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from conftest import invoke
from conftest import mind_events as events

from pmm import errors, settings

ROOT = Path(__file__).resolve().parent.parent
NUMERIC = [s for s in settings.ALL if s.kind is not str]


@pytest.mark.parametrize("setting", NUMERIC, ids=[s.name for s in NUMERIC])
@pytest.mark.parametrize("value", ["abc", "nan", "-inf", "1e400", "99999999999", "-5", "0x10"])
def test_every_numeric_setting_refuses_what_it_does_not_take(setting: settings.Setting, value: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(setting.name, value)
    with pytest.raises(errors.UsageError) as caught:
        setting.get()
    assert caught.value.exit_code == 2
    assert caught.value.message.startswith(f"${setting.name} must be ")
    assert repr(value) in caught.value.message and caught.value.hint


@pytest.mark.parametrize("setting", NUMERIC, ids=[s.name for s in NUMERIC])
def test_unset_or_blank_means_the_default(setting: settings.Setting, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(setting.name, raising=False)
    assert setting.get() == setting.default
    monkeypatch.setenv(setting.name, "  ")
    assert setting.get() == setting.default
    monkeypatch.setenv(setting.name, f" {setting.default} ")
    assert setting.get() == setting.default


def test_a_pasted_wall_of_text_is_not_echoed_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PMM_LOCK_TIMEOUT", "x" * 500)
    with pytest.raises(errors.UsageError) as caught:
        settings.LOCK_TIMEOUT.get()
    assert len(caught.value.message) < 200


@pytest.mark.parametrize(("name", "args"), [
    ("PMM_LOCK_TIMEOUT", ("remember", "a note")),
    ("PMM_LOCAL_CTX", ("model", "info")),
    ("PMM_PROVIDER_TIMEOUT", ("chat", "-m", "hello")),
    ("PMM_PROVIDER_DEADLINE", ("chat", "-m", "hello")),
])
def test_a_bad_value_is_exit_2_with_a_hint_and_nothing_written(name: str, args: tuple[str, ...],
                                                               tmp_path: Path) -> None:
    mind = tmp_path / "mind.db"
    assert invoke("--mind", str(mind), "init").exit_code == 0
    if name.startswith("PMM_PROVIDER"):  # an HTTP model, so the provider settings are read
        assert invoke("--mind", str(mind), "model", "add", "web", "openai-compatible:m",
                      "--base-url", "http://127.0.0.1:9/v1", "--use").exit_code == 0
    before = events(mind)
    result = invoke("--mind", str(mind), *args, env={name: "abc"})
    assert result.exit_code == 2, result.output
    assert f"Error: ${name} must be " in result.stderr and "not 'abc'" in result.stderr
    assert "Hint: unset it for the default" in result.stderr and "Traceback" not in result.stderr
    assert events(mind) == before



def test_the_man_page_environment_table_is_the_declarations() -> None:
    page = (ROOT / "man" / "pmm.1").read_text()
    section = page.split(".SH ENVIRONMENT", 1)[1].split(".SH ", 1)[0]
    for setting in settings.ALL:
        assert f".B {setting.name}\n" in section, setting.name


def test_no_module_reads_a_pmm_variable_around_the_settings() -> None:
    """os.environ of a PMM_ name anywhere but pmm/settings.py would be a second, drifting parser."""
    offenders = []
    for module in (ROOT / "pmm").rglob("*.py"):
        if module.name == "settings.py" and module.parent.name == "pmm":
            continue
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Call | ast.Subscript | ast.Compare):
                code = ast.unparse(node)
                if "environ" in code and re.search(r"['\"]PMM_", code):
                    offenders.append(f"{module.relative_to(ROOT)}: {code}")
    assert not offenders
