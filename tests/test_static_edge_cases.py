"""Edge cases of the static path: module lookup, the cache, the prefilter, odd line ends,
odd paths, sizes and working directories, and the CLI's warnings and output files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from helpers import NO_REUSE, REUSE_BASE, run_cli

from kvaudit.analysis.prefilter import press_candidates, scan_text
from kvaudit.fingerprint import SourceLines

NO_REUSE_FINDING = "P cites ChunkKV"  # KVA101 at line 12


def concise(*args: str):
    return run_cli("check", *args, "-f", "concise")


def rules(result) -> list[tuple[str, str]]:
    return sorted((p["path"], f["rule"]) for p in result.json()["presses"] for f in p["findings"])


# -- 7: same-named top-level modules in different folders ---------------------------------------
@pytest.fixture
def twin_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "base.py").write_text(
        "from kvpress.presses.base_press import BasePress\nclass ReuseBase(BasePress): pass\n")
    (tmp_path / "b" / "base.py").write_text("class ReuseBase: pass\n")
    sub = ('"""ChunkKV, arXiv 2502.00299."""\nfrom dataclasses import dataclass\nfrom base import ReuseBase\n'
           "@dataclass\nclass Sub(ReuseBase): pass\n")
    (tmp_path / "a" / "sub.py").write_text(sub)
    (tmp_path / "b" / "sub.py").write_text(sub)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_top_level_import_reads_the_importing_files_own_folder_first(twin_folders: Path) -> None:
    forward, backward = run_cli("check", "a", "b", "-f", "json"), run_cli("check", "b", "a", "-f", "json")
    assert forward.stdout == backward.stdout  # whatever the order of the targets
    assert rules(forward) == [("a/sub.py", "KVA101")]  # b/sub.py derives from b/base.py: not a press
    assert "b: no press classes found" in forward.stderr and "b: no press classes found" in backward.stderr
    alone = run_cli("check", "a", "-f", "json")
    assert rules(alone) == rules(forward)  # whatever else is in the run


def test_a_file_beside_the_importer_wins_over_a_file_of_the_run_in_another_folder(twin_folders: Path) -> None:
    # a/base.py is not in the run, b/base.py is: CPython would import a/base.py for a/sub.py.
    result = run_cli("check", "a/sub.py", "b/base.py", "-f", "json")
    assert rules(result) == [("a/sub.py", "KVA101")]


# -- 1: the cache sees a module that now shadows the one it read ---------------------------------
SUB = ('"""ChunkKV, arXiv 2502.00299."""\nfrom dataclasses import dataclass\nfrom base import ReuseBase\n\n\n'
       "@dataclass\nclass Sub(ReuseBase):\n    pass\n")


def test_the_cache_notices_a_package_that_now_shadows_the_base_module(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KVAUDIT_NO_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    project = tmp_path / "d"
    project.mkdir()
    (project / "base.py").write_text(REUSE_BASE)
    (project / "sub.py").write_text(SUB)
    monkeypatch.chdir(project)
    cache = ["--cache-dir", str(tmp_path / "cache")]
    assert concise("sub.py", *cache).stdout == "No findings.\n"
    (project / "base").mkdir()  # a package wins over base.py, in CPython and in kvaudit
    (project / "base" / "__init__.py").write_text(REUSE_BASE.replace("if module.layer_idx == leader:", "if True:"))
    fresh = concise("sub.py", "--no-cache")
    assert "KVA102" in fresh.stdout
    assert concise("sub.py", *cache).stdout == fresh.stdout  # not the stale cached result
    (project / "base" / "__init__.py").unlink()
    (project / "base").rmdir()
    assert concise("sub.py", *cache).stdout == "No findings.\n"


# -- 2: the prefilter never leaves out a press the index would find -------------------------------
SUB_PRESS_BODY = '''

@dataclass
class Sub(MB):
    press: object = None

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
        index = scores.topk(10, dim=-1).indices
        return keys.gather(2, index), values.gather(2, index)
'''


@pytest.mark.parametrize("import_line", [
    "from a import \\\n    MyBase as MB",  # a backslash continuation
    "from a import (  # see f(x)\n    MyBase as MB,\n)",  # a parenthesis in a comment of the import
])
def test_a_walk_finds_presses_behind_any_import_spelling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         import_line: str) -> None:
    (tmp_path / "a.py").write_text("from kvpress.presses.base_press import BasePress\nclass MyBase(BasePress): pass\n")
    (tmp_path / "b.py").write_text('"""ChunkKV, arXiv 2502.00299."""\nfrom dataclasses import dataclass\n'
                                   + import_line + SUB_PRESS_BODY)
    monkeypatch.chdir(tmp_path)
    walked, named = concise("."), concise("a.py", "b.py")
    assert walked.stdout == named.stdout and walked.exit_code == named.exit_code == 1
    assert "b.py:" in walked.stdout and "KVA101" in walked.stdout


def test_a_walk_finds_a_press_with_carriage_return_line_ends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cronly.py").write_bytes(NO_REUSE.replace("\n", "\r").encode())
    monkeypatch.chdir(tmp_path)
    walked = concise(".")
    assert (walked.exit_code, walked.stderr) == (1, "")
    assert walked.stdout.startswith("cronly.py:12:18: KVA101 ")


@pytest.mark.parametrize("text", [
    "from a import \\\r    MyBase as MB\rclass Sub(MB): pass\r",  # CR line ends and a continuation
    "from a import MyBase as \uff2dB\nclass Sub(MB): pass\n",  # `ＭB` is the identifier `MB` (NFKC)
    "class Sub[T](Mystery): pass\n",  # type parameters: the bases are not read, so it may be a press
    "from a import MyBase as MB\nclass\x0cSub(MB): pass\n",  # a form feed is a blank
])
def test_the_scan_keeps_every_class_that_may_reach_a_press(text: str) -> None:
    scans = {"a": scan_text("from kvpress.presses.base_press import BasePress\nclass MyBase(BasePress): pass\n"),
             "b": scan_text(text)}
    assert press_candidates(scans) == {"a", "b"}


# -- 3 and 12: symbolic links in a walk ----------------------------------------------------------
def test_a_broken_link_found_in_a_walk_is_named_by_the_link(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "p.py").write_text(NO_REUSE)
    (tmp_path / "d" / "broken.py").symlink_to("nowhere.py")
    (tmp_path / "d" / "other.py").symlink_to("../elsewhere/nothere.py")
    monkeypatch.chdir(tmp_path / "d")
    result = run_cli("check", ".", "-f", "json")
    errors = {f["path"]: f["message"] for f in result.json()["files"] if f["status"] == "error"}
    assert sorted(errors) == ["broken.py", "other.py"]  # not nowhere.py, not /abs/elsewhere/nothere.py
    assert errors["broken.py"].startswith("broken.py: no such file")
    monkeypatch.chdir(tmp_path)
    assert "error: d/other.py: no such file" in run_cli("check", "d").stderr


def test_a_folder_whose_press_file_is_a_link_holds_a_press(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "only").mkdir()
    (tmp_path / "real" / "p.py").write_text(NO_REUSE)
    (tmp_path / "only" / "q.py").symlink_to("../real/p.py")
    monkeypatch.chdir(tmp_path)
    result = concise("only")
    assert (result.exit_code, result.stderr) == (1, "")  # was: "only: no press classes found", exit 2
    assert "KVA101" in result.stdout


# -- 4: a huge size cap ----------------------------------------------------------------------------
@pytest.mark.parametrize("size", ["9223372036854775806", "99999999999999999999", "9999999999GiB"])
def test_a_huge_size_cap_reads_files_as_no_cap_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: str) -> None:
    (tmp_path / "p.py").write_text(NO_REUSE)
    monkeypatch.chdir(tmp_path)
    result = concise(".", "--max-file-size", size)
    assert (result.exit_code, result.stderr) == (1, "")
    assert NO_REUSE_FINDING in result.stdout
    (tmp_path / "kvaudit.toml").write_text(f"max-file-size = {size if size.isdigit() else repr(size)}\n")
    from_config = concise(".")
    assert (from_config.exit_code, from_config.stdout) == (1, result.stdout)


def test_the_size_cap_still_refuses_a_larger_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "p.py").write_text(NO_REUSE)
    monkeypatch.chdir(tmp_path)
    size = len(NO_REUSE.encode())
    assert concise("p.py", "--max-file-size", str(size)).exit_code == 1
    refused = concise("p.py", "--max-file-size", str(size - 1))
    assert refused.exit_code == 2 and "p.py: too large" in refused.stderr


# -- 5 and 6: Python's line ends only ----------------------------------------------------------
FORM_FEED = NO_REUSE.replace("\n@dataclass", "\n\x0c@dataclass")  # line 7 starts with a form feed


@pytest.mark.parametrize("odd", ["\x0c", "\u2028", "\x85", "\x1c"])
def test_fingerprints_hash_the_findings_own_line(tmp_path: Path, odd: str) -> None:
    path = tmp_path / "ff.py"
    path.write_text(NO_REUSE.replace("\n@dataclass", f"\n# {odd}\n@dataclass"))  # one line more
    assert SourceLines().line(str(path), 13).strip().startswith("scores = self.press.score(")


def test_a_baseline_survives_an_edit_to_another_line_after_a_form_feed(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ff.py").write_text(FORM_FEED)
    monkeypatch.chdir(tmp_path)
    assert run_cli("check", ".", "--baseline", "b.json", "--write-baseline").exit_code == 0
    lines = FORM_FEED.split("\n")
    assert lines[10].strip().startswith("def compress(")
    lines[10] += "  # unrelated note"
    (tmp_path / "ff.py").write_text("\n".join(lines))
    result = concise(".", "--baseline", "b.json")
    assert (result.exit_code, result.stdout) == (0, "No findings.\n")
    assert "no longer found" not in result.stderr


@pytest.mark.parametrize("line_end", ["\n", "\r\n", "\r"])
def test_inline_suppressions_work_whatever_the_line_ends(tmp_path: Path, line_end: str) -> None:
    text = NO_REUSE.replace("        scores = self.press",
                            "        # kvaudit: ignore[KVA101] planned\n        scores = self.press")
    path = tmp_path / "p.py"
    path.write_bytes(text.replace("\n", line_end).encode())
    result = concise(str(path))
    assert (result.exit_code, result.stdout) == (0, "No findings.\n")


def test_a_citation_in_a_comment_is_placed_on_its_line_after_a_form_feed(tmp_path: Path) -> None:
    path = tmp_path / "c.py"
    path.write_text("from dataclasses import dataclass\n\x0c\nfrom kvpress.presses.base_press import BasePress\n\n"
                    "# Implements ChunkKV (arXiv 2502.00299).\n@dataclass\nclass P(BasePress):\n    pass\n")
    [press] = run_cli("check", str(path), "-f", "json").json()["presses"]
    assert {claim["line"] for claim in press["claims"]} == {5}


# -- 13: no rule left to run ----------------------------------------------------------------------
@pytest.fixture
def one_press(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "p.py").write_text(NO_REUSE)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _warnings(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("warning:")]


@pytest.mark.parametrize(("config", "flags"), [
    ('ignore = ["KVA"]\n', []),
    ("", ["--ignore", "KVA"]),
    ('[per-path-ignores]\n"**" = ["KVA"]\n', []),
    ('select = ["KVA1"]\nignore = ["KVA1"]\n', []),
])
def test_switching_every_rule_off_is_said(one_press: Path, config: str, flags: list[str]) -> None:
    (one_press / "kvaudit.toml").write_text(config)
    result = concise("p.py", *flags)
    assert (result.exit_code, result.stdout) == (0, "No findings.\n")
    [warning] = _warnings(result)
    assert "no rule is left to run" in warning and "will report no finding" in warning


def test_no_warning_when_the_command_line_selects_rules_over_an_empty_select(one_press: Path) -> None:
    (one_press / "kvaudit.toml").write_text("select = []\n")
    result = concise("p.py", "--select", "KVA1")
    assert result.exit_code == 1 and NO_REUSE_FINDING in result.stdout
    assert _warnings(result) == []
    assert "select = [] selects no rule" in _warnings(concise("p.py"))[0]


def test_a_per_path_ignore_of_some_files_is_no_reason_to_warn(one_press: Path) -> None:
    (one_press / "kvaudit.toml").write_text('[per-path-ignores]\n"tests/**" = ["KVA"]\n')
    result = concise("p.py")
    assert result.exit_code == 1 and _warnings(result) == []


# -- 14: --write-baseline writes the report files asked for ---------------------------------------
def test_write_baseline_also_writes_the_requested_output_files(one_press: Path) -> None:
    result = run_cli("check", "p.py", "--baseline", "b.json", "--write-baseline", "--output-sarif", "s.sarif",
                     "--output-json", "o.json", "--output-github", "g.txt")
    assert result.exit_code == 0
    assert json.loads((one_press / "b.json").read_text())
    assert [f["rule"] for p in json.loads((one_press / "o.json").read_text())["presses"] for f in p["findings"]] \
        == ["KVA101"]
    assert "KVA101" in (one_press / "s.sarif").read_text() and "KVA101" in (one_press / "g.txt").read_text()


# -- 16: a target name the OS refuses -------------------------------------------------------------
def test_a_name_too_long_is_an_error_of_that_target_only(one_press: Path) -> None:
    long = "a" * 5000
    for targets in (["p.py", long], [long + ".py", "p.py"], [f"{long}/x.py", "p.py"]):
        result = concise(*targets)
        assert result.exception is None
        assert result.exit_code == 2 and NO_REUSE_FINDING in result.stdout  # the other target is reported
        [error] = result.stderr.splitlines()
        assert error.endswith("…: file name too long") and len(error) < 400


# -- 17: a working directory that was deleted -------------------------------------------------
@pytest.mark.parametrize("flags", [[], ["--no-config"]])
def test_a_deleted_working_directory_is_one_line_and_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            flags: list[str]) -> None:
    (tmp_path / "p.py").write_text(NO_REUSE)
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    os.rmdir(gone)
    for command in (["check", str(tmp_path / "p.py"), *flags], ["report", str(tmp_path / "p.py"), "-o", str(tmp_path / "r.md"), *flags],
                    ["trace", str(tmp_path / "p.py"), *flags]):
        result = run_cli(*command)
        assert result.exception is None, command  # was: FileNotFoundError's traceback, exit 1
        assert result.exit_code == 2
        assert result.stderr == "error: the working directory no longer exists; run kvaudit from an existing folder\n"
    assert run_cli("rules", "KVA101").exit_code == 0  # needs no working directory


# -- an unused reuse parameter inherited from a base in another file ---------------------------------
UNUSED_KNOB_BASE = NO_REUSE.replace('"""ChunkKV, arXiv 2502.00299."""', '"""A base press."""').replace(
    "class P(BasePress):\n    press: object = None\n",
    "class KnobBase(BasePress):\n    press: object = None\n    n_reuse: int = 2\n")


def test_an_inherited_unused_reuse_parameter_counts_as_in_one_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Once the field was only seen in the press's own file: across files the verdict fell to
    # `missing` (KVA101), in one file it was `partial` with KVA103.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "base.py").write_text(UNUSED_KNOB_BASE)
    (tmp_path / "sub.py").write_text('"""ChunkKV, arXiv 2502.00299."""\nfrom dataclasses import dataclass\n\n'
                                     "from base import KnobBase\n\n\n@dataclass\nclass Sub(KnobBase):\n    pass\n")
    payload = run_cli("check", "sub.py", "base.py", "-f", "json", "--no-cache").json()
    [sub] = [p for p in payload["presses"] if p["name"] == "Sub"]
    assert sub["verdicts"]["layer-index-reuse"] == "partial"
    [knob] = [f for f in sub["findings"] if f["rule"] == "KVA103"]
    assert knob["line"] == 8 and "inherited from KnobBase, base.py:10" in knob["message"]
    [partial] = [f for f in sub["findings"] if f["rule"] == "KVA102"]
    assert "score() at base.py:13" in partial["message"]


# -- the flow pass walks a method body twice only when it loops ------------------------------------
LATE_LEADER = '''"""ChunkKV (arXiv 2502.00299): the group test is computed after it is used."""
from dataclasses import dataclass

from kvpress.presses.base_press import BasePress


@dataclass
class LateLeaderPress(BasePress):
    press: object = None
    n_reuse: int = 2
    kept: object = None

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        leader = False
        if leader or self.kept is None:
            scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
            self.kept = scores.topk(keys.shape[2] // 2, dim=-1).indices
        leader = module.layer_idx % self.n_reuse == 0
        self.was_leader = leader
        return keys.gather(2, self.kept), values.gather(2, self.kept)
'''


def _layer_checks(tmp_path: Path, text: str) -> list[int]:
    (tmp_path / "p.py").write_text(text)
    [press] = run_cli("check", str(tmp_path / "p.py"), "-f", "json", "--no-cache").json()["presses"]
    return [e["line"] for e in press["evidence"] if e["kind"] == "layer-check"]


def test_a_value_assigned_later_reaches_an_earlier_test_only_through_a_loop(tmp_path: Path) -> None:
    # Without a loop `leader` is always False at the test (line 15): not a layer-group test. The old
    # double walk of every body carried the later group value back up and called it one.
    assert 15 not in _layer_checks(tmp_path, LATE_LEADER)
    looped = LATE_LEADER.replace("        leader = False\n", "        leader = False\n        for _ in range(2):\n")
    looped = looped.replace("\n        if leader", "\n            if leader").replace(
        "\n            scores", "\n                scores").replace("\n            self.kept = s", "\n                self.kept = s")
    looped = looped.replace("\n        leader = module", "\n            leader = module")
    compile(looped, "looped.py", "exec")
    assert 16 in _layer_checks(tmp_path, looped)  # in a loop the second iteration sees the group value


def test_a_comprehension_counts_as_a_loop() -> None:
    import libcst as cst

    from kvaudit.analysis.flow import _has_loop

    body = cst.parse_module("def f(self, module):\n    flags = [(g, g := module.layer_idx % 2) for _ in range(2)]\n")
    assert _has_loop(body.body[0].body)
    assert not _has_loop(cst.parse_module("def f(self):\n    x = 1\n").body[0].body)
