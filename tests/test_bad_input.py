"""Bad input: a one-line message, exit code 2, no traceback, and the other files still audited."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import STATIC_PRESSES, run_cli

GOOD = (STATIC_PRESSES / "alg2_modulo.py").read_text()

BAD_FILES = {
    "syntax.py": ("def compress(self:\n    pass\n", "syntax error at line 1"),
    "latin1.py": ("# caf\xe9\n".encode("latin-1"), "not UTF-8"),
    "binary.py": (b"\x7fELF\x00\x00\x01", "binary file"),
    "nested_parens.py": ("x = " + "(" * 5000 + "1" + ")" * 5000 + "\n", "too deeply nested"),
    "nested_blocks.py": ("".join(" " * i + "if x:\n" for i in range(120)) + " " * 120 + "pass\n",
                         "too many levels of indentation"),
}


def _write(path: Path, content: str | bytes) -> None:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_file_is_reported_beside_a_good_one(tmp_path: Path, name: str) -> None:
    content, expected = BAD_FILES[name]
    _write(tmp_path / name, content)
    (tmp_path / "good.py").write_text(GOOD)
    result = run_cli("check", str(tmp_path / name), str(tmp_path / "good.py"), "-f", "json")
    assert result.exception is None
    assert result.exit_code == 2
    payload = result.json()
    [bad] = [f for f in payload["files"] if f["path"].endswith(name)]
    assert bad["status"] == "error" and expected in bad["message"]
    assert "\n" not in bad["message"]
    assert [p["name"] for p in payload["presses"]] == ["Alg2ModuloPress"]  # the good file still audited


def test_terminal_shows_one_line_error_and_no_traceback(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("class A(:\n")
    result = run_cli("check", str(tmp_path / "broken.py"))
    assert result.exception is None and result.exit_code == 2
    assert "Traceback" not in result.stdout + result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "syntax error at line 1" in error_lines[0]


def test_missing_path_and_missing_module(tmp_path: Path) -> None:
    result = run_cli("check", str(tmp_path / "nope.py"), "no_such_pkg.presses", str(STATIC_PRESSES / "alg2_modulo.py"),
                     "-f", "json")
    assert result.exit_code == 2
    messages = {f["path"]: f["message"] for f in result.json()["files"] if f["status"] == "error"}
    assert "no such file or directory" in messages[str(tmp_path / "nope.py")]
    assert "no such file, directory or importable module" in messages["no_such_pkg.presses"]
    assert len(result.json()["presses"]) == 1


def test_directory_without_presses(tmp_path: Path) -> None:
    (tmp_path / "util.py").write_text("def helper():\n    return 1\n")
    result = run_cli("check", str(tmp_path), "-f", "json")
    assert result.exit_code == 2
    errors = [f["message"] for f in result.json()["files"] if f["status"] == "error"]
    assert errors == [f"{tmp_path}: no press classes found"]


def test_empty_directory(tmp_path: Path) -> None:
    result = run_cli("check", str(tmp_path), "-f", "json")
    assert result.exit_code == 2
    assert "directory holds no Python files" in result.json()["files"][0]["message"]


def test_file_without_presses_is_fine(tmp_path: Path) -> None:
    (tmp_path / "util.py").write_text("X = 1\n")
    result = run_cli("check", str(tmp_path / "util.py"), "-f", "json")
    assert result.exit_code == 0
    assert result.json()["files"][0]["message"].endswith("no press classes")


def test_nesting_at_cpythons_limit_is_analysed(tmp_path: Path) -> None:
    # 199 nested brackets: valid Python, right under CPython's limit, inside a press method.
    expression = "(" * 199 + "keys" + ")" * 199
    source = GOOD.replace("return keys.gather(2, index), values.gather(2, index)",
                          f"return {expression}.gather(2, index), values.gather(2, index)")
    (tmp_path / "deep.py").write_text(source)
    result = run_cli("check", str(tmp_path / "deep.py"), "-f", "json")
    assert result.exception is None and result.exit_code == 0
    assert result.json()["presses"][0]["verdicts"] == {"layer-index-reuse": "implemented"}


def test_expression_too_deep_for_the_parser_is_one_error(tmp_path: Path) -> None:
    chain = "+".join(["1"] * 3000)  # CPython's parser recurses once per operator
    (tmp_path / "chain.py").write_text(GOOD.replace("        n_kept = int(", f"        junk = {chain}\n        n_kept = int("))
    (tmp_path / "good.py").write_text(GOOD.replace("Alg2ModuloPress", "OtherPress"))
    result = run_cli("check", str(tmp_path), "-f", "json")
    assert result.exception is None and result.exit_code == 2
    [bad] = [f for f in result.json()["files"] if f["status"] == "error"]
    assert bad["path"].endswith("chain.py") and "too deeply nested" in bad["message"]
    assert [p["name"] for p in result.json()["presses"]] == ["OtherPress"]


def test_empty_init_inside_a_package_is_not_an_error(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "press.py").write_text(GOOD)
    result = run_cli("check", str(package), "-f", "json")
    assert result.exit_code == 0, result.stdout
    statuses = {Path(f["path"]).name: (f["status"], f["message"]) for f in result.json()["files"]}
    assert statuses["__init__.py"][0] == "ok" and statuses["__init__.py"][1].endswith("empty file")


@pytest.mark.parametrize("content", ["", "\n\n   \n", "\ufeff"])
def test_an_empty_file_named_on_the_command_line_is_not_an_error(tmp_path: Path, content: str) -> None:
    # pre-commit passes every changed file by name, empty __init__.py files included (issue 8).
    (tmp_path / "__init__.py").write_text(content, encoding="utf-8")
    (tmp_path / "good.py").write_text(GOOD)
    result = run_cli("check", str(tmp_path / "__init__.py"), str(tmp_path / "good.py"), "-f", "json")
    assert result.exit_code == 0 and result.exception is None, result.stderr
    [empty] = [f for f in result.json()["files"] if f["path"].endswith("__init__.py")]
    assert empty["status"] == "ok" and empty["message"].endswith("empty file")
    assert run_cli("check", str(tmp_path / "__init__.py")).exit_code == 0
    assert run_cli("check", str(tmp_path / "__init__.py"), "-f", "concise").stderr == ""


def test_a_file_named_twice_is_audited_once(tmp_path: Path) -> None:
    path = tmp_path / "press.py"
    path.write_text(GOOD)
    result = run_cli("check", str(path), str(tmp_path / "." / "press.py"), "-f", "json")
    assert len(result.json()["presses"]) == 1 and len(result.json()["files"]) == 1


@pytest.mark.parametrize("flag", ["--select", "--ignore"])
def test_unknown_rule_ids_on_the_command_line_are_usage_errors(flag: str) -> None:
    for value in ("KVA999", ""):
        result = run_cli("check", flag, value, str(STATIC_PRESSES / "decoy_logs_layer.py"))
        assert result.exit_code == 2 and result.exception is None
        assert f"error: {flag}: unknown rule id" in result.stderr


def test_empty_target_name_is_an_error() -> None:
    result = run_cli("check", "", "-f", "json")
    assert result.exit_code == 2 and result.json()["files"][0]["message"] == "empty target name"


def test_unknown_claim_is_a_usage_error() -> None:
    result = run_cli("check", "--claim", "teleportation", str(STATIC_PRESSES / "alg2_modulo.py"))
    assert result.exit_code == 2 and "unknown claim teleportation" in result.stderr
