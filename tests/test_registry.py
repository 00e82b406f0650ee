"""The paper registry (rules/papers.toml) against the papers kvpress 0.5.5's presses cite.

* Every arXiv id, DOI and OpenReview id written in kvpress's press files has an entry.
* Each press cites the paper docs/papers.md records for it, and no other: a name of the registry
  that matched a word of another press's docstring would show up here as a wrong citation.
* The defaults of an entry are fields some citing press has (KVA202 compares them by name), or
  parameters the paper's mechanisms read (ChunkKV's `n_reuse`, which kvpress's press lacks: KVA101).

Static only: nothing here imports torch, transformers or kvpress.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from kvaudit.analysis.index import ProjectIndex
from kvaudit.analysis.reuse import constructor_fields
from kvaudit.claims import find_paper_in_hierarchy, load_registry, paper_mentions
from kvaudit.mechanism import mechanism_by_id
from kvaudit.model import HOLDS, NOT_CHECKABLE, RELATION, VIOLATED
from kvaudit.source import load_source

# The paper each press cites (registry key), as read by hand in docs/papers.md; None: it cites none.
CITED = {
    "AdaKVPress": "adakv", "BlockPress": "keydiff", "CAMPress": "cam", "CapPress": "capkv",
    "ChunkKVPress": "chunkkv", "ChunkPress": "finch", "CompactorPress": "compactor", "ComposedPress": None,
    "CompressionRatioDecodingPress": None, "CriticalAdaKVPress": "criticaladakv", "CriticalKVPress": "criticalkv",
    "CURPress": "curdkv", "DecodingPress": None, "DMSPress": "dms", "DuoAttentionPress": "duoattention",
    "EntropyGatedChunkKVPress": "chunkkv", "ExpectedAttentionPress": None, "ExpectedAttentionStatsPress": None,
    "FastKVzipPress": "fastkvzip", "FinchPress": "finch", "KeyDiffPress": "keydiff", "KnormPress": "knorm",
    "KVComposePress": "kvcompose", "KVgradPress": "kvgrad", "KVzapPress": "kvzap", "KVzipPress": "kvzip",
    "LagKVPress": "lagkv", "LeverageScorePress": "compactor", "LUKVPress": "lukv", "NonCausalAttnPress": "compactor",
    "PerLayerCompressionPress": None, "PrefillDecodingPress": None, "PyramidKVPress": "pyramidkv",
    "QFilterPress": "qfilters", "RandomPress": None, "RestoreKVPress": "restorekv", "ScorerPress": None,
    "SimLayerKVPress": "simlayerkv", "SnapKVPress": "snapkv", "StreamingLLMPress": "streamingllm",
    "ThinKPress": "think", "TOVAPress": "tova",
    # Named only in passing ("Related to", "such as", "Inspired by"): a relation, no claims (RELATED below).
    "ObservedAttentionPress": None, "KeyRerotationPress": None, "MergingPress": None,
}
# The paper each of those names in passing (docs/papers.md, "Relations").
RELATED = {"ObservedAttentionPress": ["h2o"], "KeyRerotationPress": ["finch"], "MergingPress": ["tome", "d2o"]}
# No kvpress press cites these as its method.
RELATION_ONLY = {"tome", "d2o"}

REPORTS = Path(__file__).resolve().parents[1] / "reports"
ARXIV = re.compile(r"arxiv\.org/(?:abs|pdf)/(\d{4}\.\d{4,5})")
OTHER_IDS = re.compile(r"doi/(10\.\d+/[\w.]+)|(openreview\.net/forum\?id=\w+)")


@pytest.fixture(scope="module")
def index(kvpress_presses_dir: Path) -> ProjectIndex:
    return ProjectIndex([load_source(path) for path in sorted(kvpress_presses_dir.glob("*.py"))])


def presses(index: ProjectIndex) -> dict:
    return {cls.name: cls for module in index.modules for cls in module.classes.values() if index.is_press(cls)}


def test_every_identifier_kvpress_cites_is_registered(kvpress_presses_dir: Path) -> None:
    text = "\n".join(path.read_text(encoding="utf-8") for path in sorted(kvpress_presses_dir.glob("*.py")))
    arxiv = set(ARXIV.findall(text))
    others = {doi or forum for doi, forum in OTHER_IDS.findall(text)}
    registry = load_registry()
    assert len(arxiv) == 27 and len(others) == 3, (sorted(arxiv), sorted(others))  # kvpress 0.5.5
    assert arxiv <= {paper.arxiv for paper in registry}
    assert all(any(link in other or other in link for paper in registry for link in paper.links) for other in others)


def test_each_press_cites_its_own_paper(index: ProjectIndex) -> None:
    found = presses(index)
    assert set(found) == set(CITED)
    cited = {name: (hit[0].key if (hit := find_paper_in_hierarchy(cls, index)) else None) for name, cls in found.items()}
    assert cited == CITED


def test_a_paper_named_in_passing_is_a_relation(index: ProjectIndex) -> None:
    found = presses(index)
    for name, keys in RELATED.items():
        mentions = paper_mentions(found[name], index)
        assert [(m.kind, m.paper) for m in mentions if m.paper] == [(RELATION, key) for key in keys], (name, mentions)


def test_registry_keys_and_names_are_unique() -> None:
    registry = load_registry()
    assert len({paper.key for paper in registry}) == len(registry)
    # one arXiv id per paper, except CriticalKV's two registrations (per layer, and on AdaKV's budget)
    ids = [paper.arxiv for paper in registry if paper.arxiv]
    assert sorted({i for i in ids if ids.count(i) > 1}) == ["2502.03805"]
    names = [name for paper in registry for name in paper.names]
    assert len(set(names)) == len(names)


def test_relations_carry_no_claims() -> None:
    papers = {paper.key: paper for paper in load_registry()}
    for key in RELATION_ONLY:
        assert papers[key].claims == {} and papers[key].defaults == {}, key


def test_defaults_name_fields_of_a_citing_press(index: ProjectIndex) -> None:
    found = presses(index)
    for paper in load_registry():
        citing = [found[name] for name, key in CITED.items() if key == paper.key]
        fields = {decl.name for cls in citing for decl in constructor_fields(index, cls)}
        fields |= {fact for claim in paper.claims for fact in mechanism_by_id(claim).facts}
        assert set(paper.defaults) <= fields, (paper.key, sorted(set(paper.defaults) - fields))


def test_the_committed_audit_checks_an_own_claim_of_most_papers_kvpress_cites() -> None:
    """Issue 16: of the 24 arXiv papers some press cites as its method, at least 22 have one of their own claims
    checked (holds or violated, accepted or not) on a citing press in the committed audit (its claims baseline,
    `make kvpress-diff`); the claims of each of the rest are not-checkable, with the reason in the report."""
    registry = {paper.key: paper for paper in load_registry()}
    method = {registry[key].arxiv for key in CITED.values() if key and registry[key].arxiv}
    assert len(method) == 24
    checked: set[str] = set()
    unchecked: dict[str, list[tuple[str, str]]] = {}
    for press in json.loads((REPORTS / "kvpress-0.5.5.claims-baseline.json").read_text(encoding="utf-8"))["presses"]:
        key = CITED.get(press["name"])
        if not key or not (arxiv := registry[key].arxiv):
            continue
        own = [claim for claim in press["claims"] if f"arXiv {arxiv}" in claim["paper"]]
        if any(claim["verdict"] in (HOLDS, VIOLATED) for claim in own):
            checked.add(arxiv)
        else:
            unchecked.setdefault(arxiv, []).extend((claim["id"], claim["verdict"]) for claim in own)
    assert len(checked) >= 22, sorted(method - checked)
    report = (REPORTS / "kvpress-0.5.5.md").read_text(encoding="utf-8")
    for arxiv in method - checked:
        assert unchecked.get(arxiv), f"arXiv {arxiv}: no claim of its own in the audit"
        for claim, verdict in unchecked[arxiv]:
            assert verdict == NOT_CHECKABLE, (arxiv, claim, verdict)
            reason = rf"- `{claim}` \([^\n]*arXiv {arxiv}\)\): \*\*not-checkable\*\*\. not checkable on a tiny model: \w"
            assert re.search(reason, report), (arxiv, claim)
