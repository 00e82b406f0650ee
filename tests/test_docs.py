"""The documents cannot rot: their Python blocks run, and they refer only to files in the repository.

* Every fenced ``python`` block of README.md and docs/*.md is run, in-process (torch is imported
  once for the whole suite), except a block right after a ``<!-- kvaudit:fragment ... -->`` comment.
* README.md and docs/reference-press.md each hold the complete reference-press snippet: tiny
  model, input ids, ``with press(model):`` and the kvpress pipeline with the local tokenizer.
* No document (README.md, docs/*.md, reports/*.md) links to, or names, a repository file that is
  not there: Markdown links and images must resolve to a tracked file or folder, and so must
  repository paths (``docs/…``, ``tests/…``) and ``*.md`` names written in the prose.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ALL_DOCS = [*DOCS, *sorted((ROOT / "reports").glob("*.md"))]
FRAGMENT = "<!-- kvaudit:fragment"
FENCE = re.compile(r"^```(\w*)\s*$")


def code_blocks(path: Path) -> list[tuple[int, str, str, bool]]:
    """(line, language, code, is_fragment) of each fenced block."""
    blocks: list[tuple[int, str, str, bool]] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        match = FENCE.match(lines[index])
        if match is None:
            index += 1
            continue
        start, language = index, match.group(1)
        previous = next((lines[i] for i in range(start - 1, -1, -1) if lines[i].strip()), "")
        index += 1
        body: list[str] = []
        while index < len(lines) and lines[index].strip() != "```":
            body.append(lines[index])
            index += 1
        blocks.append((start + 1, language, "\n".join(body) + "\n", previous.startswith(FRAGMENT)))
        index += 1
    return blocks


def runnable_blocks() -> list[tuple[str, str]]:
    found = []
    for path in DOCS:
        for line, language, code, fragment in code_blocks(path):
            if language == "python" and not fragment:
                found.append((f"{path.relative_to(ROOT)}:{line}", code))
    return found


@pytest.mark.parametrize(("where", "code"), runnable_blocks(), ids=[where for where, _ in runnable_blocks()])
def test_python_blocks_of_the_docs_run(where: str, code: str, monkeypatch, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("kvpress")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, where, "exec"), {"__name__": "__doc_snippet__"})  # noqa: S102 - our own docs


@pytest.mark.parametrize("doc", ["README.md", "docs/reference-press.md"])
def test_the_reference_press_snippet_is_complete(doc: str) -> None:
    snippets = [code for where, code in runnable_blocks() if where.startswith(f"{doc}:")]
    complete = [code for code in snippets if all(part in code for part in (
        "from kvaudit.reference import ChunkKVReusePress", "build_tiny_model(", "make_input_ids(",
        "press(model):", '"kv-press-text-generation"', "build_local_tokenizer()",
    ))]
    assert complete, f"{doc} has no complete, runnable reference-press snippet"


def test_code_blocks_are_found() -> None:
    fragments = [where for path in DOCS for where, language, _, fragment in code_blocks(path) if fragment]
    assert len(runnable_blocks()) >= 2 and fragments  # the parser sees both kinds


# ---------------------------------------------------------------------------------------------
# No reference to a missing file
# ---------------------------------------------------------------------------------------------

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
TOP_FOLDERS = ("audit", "rules", "tests", "docs", "reports", "benchmarks", ".ci")
REPO_PATH = re.compile(r"(?<![\w/.~…-])((?:%s)/[\w./-]*|[\w.-]+\.md)(?![\w/-])" % "|".join(re.escape(f) for f in TOP_FOLDERS))


def tracked() -> set[str]:
    """Every file in the repository, and every folder that holds one."""
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        files = set(out.split("\n")) - {""}
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (an sdist): what is on disk
        files = {str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file() and ".venv" not in p.parts}
    folders = {str(Path(f).parent) for f in files}
    while True:
        more = {str(Path(f).parent) for f in folders} - folders
        if not more:
            break
        folders |= more
    return files | folders


def prose(text: str) -> str:
    """The text without fenced blocks (commands there name output files that need not exist)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def missing_references(path: Path, known: set[str]) -> list[str]:
    text = path.read_text(encoding="utf-8")
    missing = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL or an anchor in the same page
        relative = (path.parent / target.split("#", 1)[0]).resolve()
        try:
            name = str(relative.relative_to(ROOT))
        except ValueError:
            missing.append(f"link {target} (outside the repository)")
            continue
        if name not in known:
            missing.append(f"link {target}")
    for mention in REPO_PATH.findall(LINK.sub("", prose(text))):
        name = mention.rstrip("/.")
        beside = (path.parent / name).resolve()
        candidates = {name, str(beside.relative_to(ROOT)) if beside.is_relative_to(ROOT) else name}
        if "/" not in name:  # a bare file name: anywhere in the repository will do
            candidates |= {k for k in known if Path(k).name == name}
        if not candidates & known:
            missing.append(f"mention {mention}")
    return missing


@pytest.mark.parametrize("doc", ALL_DOCS, ids=[str(p.relative_to(ROOT)) for p in ALL_DOCS])
def test_documents_refer_only_to_files_in_the_repository(doc: Path) -> None:
    assert missing_references(doc, tracked()) == []


def test_the_reference_check_can_fail() -> None:
    doc = ROOT / "docs" / "example.md"  # never written: the text is checked as if it lived in docs/
    known = tracked()
    text = ("See [the guide](guide.md), ![fig](../reports/nope.png), `tests/no_such_test.py` and CONTEXT.md; "
            "[ok](trace.md), `docs/ci.md`, reference-press.md and [out](https://example.org/x.md) are fine.\n"
            "```bash\nkvaudit report x -o reports/new.md\n```\n")
    found = missing_references_from_text(text, doc, known)
    assert found == ["link guide.md", "link ../reports/nope.png", "mention tests/no_such_test.py", "mention CONTEXT.md"]


def missing_references_from_text(text: str, path: Path, known: set[str]) -> list[str]:
    class Fake:
        parent = path.parent

        def read_text(self, encoding: str = "utf-8") -> str:
            return text

    return missing_references(Fake(), known)  # type: ignore[arg-type]


def test_claims_doc_shows_both_forms_of_an_acceptance_and_kva302(tmp_path: Path) -> None:
    """docs/claims.md: each TOML acceptance it shows loads as written (pyproject or kvaudit.toml form)."""
    from kvaudit.config import load_config

    text = (ROOT / "docs" / "claims.md").read_text(encoding="utf-8")
    section = text.split("### Accepting a deviation", 1)[1].split("\n### ", 1)[0]
    blocks = [code for _, language, code, _ in code_blocks(ROOT / "docs" / "claims.md") if language == "toml"
              and code in section]
    forms = set()
    for number, code in enumerate(blocks):
        name = "pyproject.toml" if "[[tool.kvaudit.accept]]" in code else "kvaudit.toml"
        folder = tmp_path / str(number)
        folder.mkdir()
        (folder / name).write_text(code, encoding="utf-8")
        (accepted,) = load_config(folder / name).acceptances
        assert (accepted.press, accepted.claim) == ("TOVAPress", "decode-compression") and accepted.reason
        forms.add(name)
    assert forms == {"pyproject.toml", "kvaudit.toml"}
    assert "KVA302" in section and "--fail-on warning" in section
