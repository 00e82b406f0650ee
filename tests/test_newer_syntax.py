"""Files written for a newer Python than the one running kvaudit: parsed with the newest grammar
libcst knows (PEP 701 f-strings, PEP 695 type parameters and aliases, PEP 750 t-strings), audited
like any other file; a file that even that grammar refuses names the version it was parsed as."""

from __future__ import annotations

import ast
import sys
import textwrap
from pathlib import Path

import libcst as cst
import pytest

from helpers import run_cli

from kvaudit.source import SourceError, _older_syntax, load_source, newest_grammar

# A ChunkKV press (no reuse: KVA101) whose helper methods use syntax Python 3.11 cannot parse.
NEWER = textwrap.dedent('''
    """ChunkKV (arXiv 2502.00299)."""
    from dataclasses import dataclass

    import numpy as np
    from kvpress.presses.base_press import BasePress
    from kvpress.presses.scorer_press import ScorerPress

    type Layers = list[int]


    @dataclass
    class NewSyntaxPress(BasePress):
        press: ScorerPress = None
        layers: tuple = (0, 2)

        def mapping_file(self, model_name: str) -> str:
            return f"./maps/{model_name}_layers_{"_".join(map(str, self.layers))}.npy"

        def describe(self, d) -> str:
            return f"""{d["name"]}: {d['size']!r:>{10}}
    {f"{d["x"]}"}"""

        def first[T](self, xs: list[T]) -> T:
            return xs[0]

        def compress(self, module, hidden_states, keys, values, attentions, kwargs):
            scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
            kept = scores.topk(keys.shape[2] // 2, dim=-1).indices
            return keys, values
''')


def _line(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


def test_the_example_really_needs_a_newer_grammar() -> None:
    if sys.version_info >= (3, 12):
        pytest.skip("this interpreter parses PEP 701 and PEP 695 itself")
    with pytest.raises(SyntaxError):
        ast.parse(NEWER)


def test_a_file_with_newer_syntax_is_audited(tmp_path: Path) -> None:
    path = tmp_path / "newer.py"
    path.write_text(NEWER, encoding="utf-8")
    result = run_cli("check", str(path), "-f", "json")
    payload = result.json()
    assert [f["status"] for f in payload["files"]] == ["ok"], payload["files"]
    [press] = payload["presses"]
    assert press["name"] == "NewSyntaxPress" and press["line"] == _line(NEWER, "class NewSyntaxPress")
    assert press["verdicts"] == {"layer-index-reuse": "missing"}
    [finding] = [f for f in press["findings"] if f["rule"] == "KVA101"]
    # Lines after the f-strings and type parameters are where they are in the file.
    assert finding["line"] == _line(NEWER, "scores = self.press.score")
    assert result.exit_code == 1


def test_the_index_tree_keeps_every_line_and_column(tmp_path: Path) -> None:
    """The ast tree built from the older-syntax copy puts each definition and statement where libcst
    (the real code) has it, column included."""
    path = tmp_path / "newer.py"
    path.write_text(NEWER, encoding="utf-8")
    source = load_source(path)
    found = {(n.name, n.lineno, n.col_offset) for n in ast.walk(source.tree)
             if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    expected = {(name, _line(NEWER, f"{kind} {name}"), NEWER.splitlines()[_line(NEWER, f"{kind} {name}") - 1].index(kind))
                for kind, name in [("class", "NewSyntaxPress"), ("def", "mapping_file"), ("def", "describe"),
                                   ("def", "first"), ("def", "compress")]}
    assert found == expected
    returns = [n for n in ast.walk(source.tree) if isinstance(n, ast.Return)]
    assert [r.lineno for r in returns] == [_line(NEWER, "return f\"./maps"), _line(NEWER, 'return f"""'),
                                           _line(NEWER, "return xs[0]"), _line(NEWER, "return keys, values")]


def test_older_syntax_replaces_only_what_is_newer() -> None:
    fstring, tstring = 'f"{d["k"]}"', 't"hi {name}"'
    text = f'x = {fstring} + "plain"\ny = {tstring}\ndef g[T](a: T) -> T: return a\nclass C[T]: pass\ntype A = int\n'
    older = _older_syntax(cst.parse_module(text), text)

    def blank(code: str, kept: str = "") -> str:
        return kept + " " * (len(code) - len(kept))

    assert older.splitlines() == ["x = " + blank(fstring, '""') + ' + "plain"', "y = " + blank(tstring, '""'),
                                  "def g" + blank("[T]") + "(a: T) -> T: return a", "class C" + blank("[T]") + ": pass",
                                  blank("type A = int", "pass")]
    ast.parse(older)


@pytest.mark.parametrize("text, line, reason", [
    ("def compress(self:\n    pass\n", 1, "'(' was never closed"),
    # Valid f-string on line 1 (Python 3.12), the real error on line 3: libcst's place is the right one.
    ('x = f"{d["k"]}"\n\ny = = 2\n', 3, "expected one of"),
])
def test_a_file_no_grammar_accepts_names_the_version(tmp_path: Path, text: str, line: int, reason: str) -> None:
    path = tmp_path / "broken.py"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SourceError) as raised:
        load_source(path)
    message = str(raised.value)
    assert message.startswith(f"syntax error at line {line}, ") and reason in message, message
    assert message.endswith(f"(parsed as Python {newest_grammar()})")
    result = run_cli("check", str(path))
    assert result.exit_code == 2 and f"parsed as Python {newest_grammar()}" in result.stderr


def test_newest_grammar_is_libcsts_newest() -> None:
    known = [tuple(map(int, v.split("."))) for v in cst.KNOWN_PYTHON_VERSION_STRINGS]
    assert tuple(map(int, newest_grammar().split("."))) == max(known) >= (3, 12)


@pytest.mark.parametrize("deep", [
    "y = " + "lambda: " * 400 + "1\n",
    "y = " + "lambda: \\\n" * 400 + "1\n",
])
def test_a_refused_file_nested_too_deep_for_libcst_is_not_handed_to_it(tmp_path: Path, deep: str) -> None:
    """libcst's parser crashes the process (C stack) on code nested a thousand levels deep; CPython stops
    such code with an error, but a file it refuses earlier for another reason is measured first."""
    path = tmp_path / "deep.py"
    path.write_text("x = = 1\n" + deep, encoding="utf-8")
    with pytest.raises(SourceError, match="too deeply nested to parse"):
        load_source(path)


def test_a_refused_file_with_a_huge_operator_chain_is_not_handed_to_libcst(tmp_path: Path) -> None:
    """libcst's time grows much faster than linearly with one statement's operator chain (thousands of `+`
    take tens of seconds): in a file CPython refused, such a statement is refused before libcst sees it."""
    path = tmp_path / "chain.py"
    path.write_text("x = = 1\ny = (\n" + "".join(f"    a{i} +\n" for i in range(3000)) + "    0)\n", encoding="utf-8")
    with pytest.raises(SourceError, match=r"too complex to parse \(a statement of over 1000 operators at line \d+"):
        load_source(path)
    # Strings hold no operators: a long prose docstring is not refused for its full stops.
    prose = tmp_path / "prose.py"
    prose.write_text('"""' + "A sentence. " * 3000 + '"""\nx = f"{d["k"]}"\n', encoding="utf-8")
    assert load_source(prose).tree.body
