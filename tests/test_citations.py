"""Citations against passing mentions: "related to H2O", "e.g. SnapKV's attention weights" and "unlike
SnapKV" name a paper without citing it (a relation: recorded and shown, no claims); an explicit arXiv id
the registry does not know is a citation all the same, and the output says the registry lacks it."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from helpers import run_cli

from kvaudit.engine import CheckOptions, run_check
from kvaudit.model import LAYER_INDEX_REUSE, RELATION, UNREGISTERED

HEAD = '''
from dataclasses import dataclass

from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress
from kvpress.presses.snapkv_press import SnapKVPress

'''


def _write(tmp_path: Path, code: str, name: str = "press.py") -> Path:
    path = tmp_path / name
    path.write_text(HEAD + textwrap.dedent(code), encoding="utf-8")
    return path


def _press(path: Path, name: str, **options):
    result = run_check([str(path)], CheckOptions(**options))
    assert not result.has_errors, result.files
    return next(p for p in result.presses if p.name == name)


def _papers(press) -> set[str]:
    return {c.origin.paper for c in press.claims if c.origin.kind == "citation"}


# -- kvpress 0.5.5's own presses ---------------------------------------------------------------------


def test_observed_attention_is_related_to_h2o_not_held_to_it(kvpress_presses_dir: Path) -> None:
    result = run_cli("check", "kvpress.presses.observed_attention_press", "-f", "json")
    [press] = [p for p in result.json()["presses"] if p["name"] == "ObservedAttentionPress"]
    assert press["claims"] == []  # "Related to H2O (https://arxiv.org/abs/2306.14048)." cites nothing
    [mention] = press["mentions"]
    assert (mention["kind"], mention["paper"], mention["phrase"]) == (RELATION, "h2o", "related to")
    assert mention["label"] == "H2O (arXiv 2306.14048)" and mention["place"] == "class docstring"
    source = (kvpress_presses_dir / "observed_attention_press.py").read_text(encoding="utf-8").splitlines()
    assert "Related to H2O" in source[mention["line"] - 1]
    # It cites no paper now, so --claim reaches it (no note that it cites H2O).
    forced = run_cli("check", "kvpress.presses.observed_attention_press", "--claim", LAYER_INDEX_REUSE, "-f", "json")
    assert "cites H2O" not in forced.stderr
    [press] = [p for p in forced.json()["presses"] if p["name"] == "ObservedAttentionPress"]
    assert [c["origin"]["kind"] for c in press["claims"]] == ["option"]


def test_key_rerotation_lists_finch_among_examples(kvpress_presses_dir: Path) -> None:
    """ "This method is used in several ... methods, such as" followed by a bullet list naming FINCH."""
    result = run_check(["kvpress.presses.key_rerotation_press"])
    [press] = [p for p in result.presses if p.name == "KeyRerotationPress"]
    assert _papers(press) == set()
    assert [(m.kind, m.paper, m.phrase) for m in press.mentions] == [(RELATION, "finch", "such as")]


def test_kvpress_presses_that_cite_their_paper_keep_it(kvpress_presses_dir: Path) -> None:
    result = run_check(["kvpress.presses"])
    cited = {p.name: _papers(p) for p in result.presses}
    assert cited["ChunkKVPress"] == {"chunkkv"} and cited["FinchPress"] == {"finch"}
    assert cited["ChunkPress"] == {"finch"}  # "Unlike global compression methods that ..." names no paper
    assert cited["PyramidKVPress"] == {"pyramidkv"} and cited["SnapKVPress"] == {"snapkv"}
    unknown = {p.name: [m.label for m in p.mentions if m.kind == UNREGISTERED] for p in result.presses}
    # The registry holds every paper kvpress 0.5.5 cites (tests/test_registry.py): none is unknown.
    assert cited["KVzipPress"] == {"kvzip"} and not any(unknown.values()), unknown
    # "Inspired by Token Merging (..., https://arxiv.org/abs/2210.09461) and D2O (...)": both in passing.
    merging = next(p for p in result.presses if p.name == "MergingPress")
    assert [(m.kind, m.paper) for m in merging.mentions] == [(RELATION, "tome"), (RELATION, "d2o")]


# -- passing mentions ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mention", [
    "Scores are any attention statistic (e.g. SnapKV's attention weights).",
    "Scores are any attention statistic, e.g. SnapKV's attention weights.",
    "Scores come from a scorer such as SnapKV's window, or H2O's accumulated attention.",
    "Unlike SnapKV, it keeps every token.",
    "In contrast to SnapKV and H2O it keeps every token.",
    "Related to SnapKV (https://arxiv.org/abs/2404.14469).",
    "Inspired by SnapKV.",
    "Compare with SnapKV; cf. H2O for decoding.",
])
def test_a_passing_mention_is_a_relation(tmp_path: Path, mention: str) -> None:
    path = _write(tmp_path, f'''
        @dataclass
        class MentionPress(ScorerPress):
            """Keeps the highest-scoring tokens.

            Parameters
            ----------
            scorer : str
                {mention}
            """

            def score(self, module, hidden_states, keys, values, attentions, kwargs):
                return -keys.norm(dim=-1)
    ''')
    press = _press(path, "MentionPress", forced_claims=[LAYER_INDEX_REUSE])
    assert _papers(press) == set(), press.claims
    # --claim reaches it: it cites nothing.
    assert [c.origin.kind for c in press.claims if c.id == LAYER_INDEX_REUSE] == ["option"]
    relations = [m for m in press.mentions if m.kind == RELATION]
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if mention in text)
    assert relations and (relations[0].paper, relations[0].line) == ("snapkv", line)


@pytest.mark.parametrize("text, paper", [
    ("Unlike SnapKV, this press implements ChunkKV (arXiv 2502.00299).", "chunkkv"),  # the comma ends the contrast
    ("ChunkKV (arXiv 2502.00299), e.g. with SnapKV's scores.", "chunkkv"),
    ("Related to H2O.\n\nBased on SnapKV (arXiv 2404.14469).", "snapkv"),
    ("Scores as in SnapKV.", "snapkv"),  # "as in" is not a passing mention: it says what the press does
])
def test_a_citation_beside_a_mention_still_cites(tmp_path: Path, text: str, paper: str) -> None:
    text = text.replace("\n", "\n" + " " * 12)  # the docstring's own indentation
    path = _write(tmp_path, f'''
        @dataclass
        class CitingPress(ScorerPress):
            """{text}"""

            def score(self, module, hidden_states, keys, values, attentions, kwargs):
                return -keys.norm(dim=-1)
    ''')
    assert _papers(_press(path, "CitingPress")) == {paper}


def test_a_mention_in_a_comment_is_a_relation_too(tmp_path: Path) -> None:
    path = _write(tmp_path, '''
        # Unlike H2O, nothing is accumulated across steps.
        @dataclass
        class CommentPress(ScorerPress):
            def score(self, module, hidden_states, keys, values, attentions, kwargs):
                return -keys.norm(dim=-1)
    ''')
    press = _press(path, "CommentPress")
    assert _papers(press) == set() and [(m.paper, m.place, m.phrase) for m in press.mentions] == [
        ("h2o", "comment", "unlike")]


# -- citations of papers the registry does not know ----------------------------------------------------


def test_an_unknown_arxiv_citation_is_reported_not_dropped(tmp_path: Path) -> None:
    path = _write(tmp_path, '''
        @dataclass
        class GraphKVPress(SnapKVPress):
            """GraphKV (arXiv 2509.00388): graph-based token selection that builds on SnapKV."""
    ''')
    press = _press(path, "GraphKVPress")
    # It cites GraphKV, not SnapKV named after it, nor SnapKV inherited from its base class.
    assert _papers(press) == set()
    [mention] = press.mentions
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if "2509.00388" in text)
    assert (mention.kind, mention.label, mention.place, mention.line) == (UNREGISTERED, "arXiv 2509.00388",
                                                                          "class docstring", line)
    message = f"cites arXiv 2509.00388 (class docstring, line {line}), which the registry does not know"
    assert mention.text == message

    payload = run_cli("check", str(path), "-f", "json").json()
    [shown] = [p for p in payload["presses"] if p["name"] == "GraphKVPress"]
    assert shown["mentions"] == [{"kind": UNREGISTERED, "label": "arXiv 2509.00388", "paper": None, "phrase": None,
                                  "place": "class docstring", "line": line, "message": message}]
    assert message in run_cli("check", str(path)).stdout
    report = tmp_path / "r.md"
    assert run_cli("report", str(path), "--no-trace", "-o", str(report)).exit_code == 0
    assert f"It {message}." in report.read_text()


@pytest.mark.parametrize("form", ["arXiv:2509.00388v2", "https://arxiv.org/abs/2509.00388", "arxiv.org/pdf/2509.00388"])
def test_every_arxiv_form_is_read(tmp_path: Path, form: str) -> None:
    path = _write(tmp_path, f'''
        @dataclass
        class UnknownPress(ScorerPress):
            """Based on {form}."""

            def score(self, module, hidden_states, keys, values, attentions, kwargs):
                return -keys.norm(dim=-1)
    ''')
    assert [m.label for m in _press(path, "UnknownPress").mentions] == ["arXiv 2509.00388"]


def test_a_subclass_inherits_its_bases_unknown_citation(tmp_path: Path) -> None:
    path = _write(tmp_path, '''
        @dataclass
        class GraphKVPress(SnapKVPress):
            """GraphKV (arXiv 2509.00388)."""


        @dataclass
        class TunedGraphKVPress(GraphKVPress):
            """Tuned defaults."""
    ''')
    press = _press(path, "TunedGraphKVPress")
    assert _papers(press) == set()
    assert [(m.label, m.place) for m in press.mentions] == [("arXiv 2509.00388",
                                                            "inherited from GraphKVPress (class docstring)")]


def test_outputs_without_mentions_are_unchanged() -> None:
    payload = run_cli("check", "kvpress.presses.chunkkv_press", "-f", "json").json()
    assert all("mentions" not in press for press in payload["presses"])
