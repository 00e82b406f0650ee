"""The static audit: targets in, one :class:`AuditResult` out.

Steps:
1. expand targets into files;
2. read every file and scan it cheaply (``analysis/prefilter.py``): only files that may
   define a press, and files named one by one, are parsed;
3. index and audit those: find presses, their claims, run the flow pass, judge the
   claimed mechanisms and apply the rules; bases are read from the other files of the
   run (or kvpress) only when a lookup needs them;
4. apply inline suppressions and put everything in a stable order.

Steps 2 and 3 run on every core when there is enough work (``workers.py``). Nothing in a
file stops the run: bad input becomes an error status of that file, and so does an
exception inside kvaudit while it analyses one (an internal error, reported as such).
"""

from __future__ import annotations

import hashlib
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from .analysis.index import ClassInfo, PressBase, ProjectIndex, module_name_of, source_root
from .analysis.prefilter import PRESS_SUFFIX, TextScan, press_candidates, scan_text
from .claims import find_paper, paper_mentions, press_claims
from .config import ClaimOverride, ignored_for_path
from .inherited import unread_base_warning
from .mechanism import mechanism_by_id
from .model import BASE_NOT_IN_KVPRESS, BASE_NOT_IN_RUN, AuditResult, FileStatus, PressReport, UnanalysedClass
from .rule import PressContext, Rule, all_rules, rule_by_id
from .source import DEFAULT_MAX_FILE_BYTES, SourceError, SourceFile, display_path, error_line, load_source, read_text
from .suppression import MARKER, apply_suppressions
from .targets import WalkSettings, cut_target, expand_targets, looks_like_module, resolve_module
from .workers import Runner, available_cores

# Below these, a pool costs more than it saves (forking, and each worker reading the bases again).
_PARALLEL_SCAN_FILES = 400
_PARALLEL_AUDIT_BYTES = 2_000_000
_SCAN_CHUNK_FILES = 64
_MESSAGE_WIDTH = 240


@dataclass
class CheckOptions:
    """What the user asked for; the configuration file fills the same fields."""

    forced_claims: list[str] = field(default_factory=list)
    select: list[str] | None = None  # rule ids (or prefixes) to run; None means all
    ignore: list[str] = field(default_factory=list)
    # From the configuration file (audit/config.py): glob -> rule ids (or prefixes) off for
    # matching files; claim overrides; the folder globs are relative to (None: the cwd).
    per_path_ignores: dict[str, list[str]] = field(default_factory=dict)
    claim_overrides: list[ClaimOverride] = field(default_factory=list)
    config_root: Path | None = None
    # Press-like classes the project declares (`[[press-bases]]`): audited as presses are.
    press_bases: tuple[PressBase, ...] = ()
    walk: WalkSettings | None = None  # excludes, .gitignore (None: the defaults)
    # False for `kvaudit trace`: the static stage only finds the presses and decides their claims.
    static_rules: bool = True
    max_file_bytes: int | None = DEFAULT_MAX_FILE_BYTES  # the size cap; None or 0: none
    # How to run, not what to find: none of these changes a result.
    debug: bool = False  # print the traceback of each internal error on stderr
    jobs: int | None = None  # worker processes; None: every core this process may use
    prefilter: bool = True  # parse only the files that may define a press (and the named ones)
    cache_dir: Path | None = None  # the on-disk cache (audit/cache.py); None: no cache


def _selected(rule: type[Rule], options: CheckOptions) -> bool:
    def matches(prefixes: list[str]) -> bool:
        return any(rule.id.startswith(prefix.upper()) for prefix in prefixes)

    return (options.select is None or matches(options.select)) and not matches(options.ignore)


def rules_left(options: CheckOptions) -> list[str]:
    """Ids of the rules that may still report somewhere: selected, not ignored, and not switched off
    for every file by a ``per-path-ignores`` glob such as ``**``. Empty: the run can report nothing."""
    from .globs import matches_every_file

    everywhere = [code for glob, codes in options.per_path_ignores.items() if matches_every_file(glob) for code in codes]
    return [rule.id for rule in all_rules()
            if _selected(rule, options) and not any(rule.id.startswith(code.upper()) for code in everywhere)]


def audit_press(index: ProjectIndex, press: ClassInfo, options: CheckOptions,
                notes: list[str] | None = None) -> PressReport:
    """Claims, verdicts, evidence and findings of one press; ``notes`` gets why ``--claim`` left it alone."""
    report = PressReport(name=press.name, path=press.source.display, line=press.line)
    span = press.source.span_of(press.tree)
    report.column, report.end_line, report.end_column = span.column, span.end_line, span.end_column
    report.claims = press_claims(press, index, options.forced_claims, options.claim_overrides, options.config_root,
                                 notes)
    report.mentions = paper_mentions(press, index)  # named in passing, or cited but unknown: no claims
    if not options.static_rules:  # `kvaudit trace`: the claims only, for the tracer to check
        return report
    context = PressContext(press=press, index=index, claims=report.claims)
    for claim in report.claims:  # the mechanisms that have static evidence (layer-index-reuse)
        mechanism = mechanism_by_id(claim.id)
        static = mechanism.static_evidence(context) if mechanism is not None else None
        if static is not None:
            context.analyses[claim.id] = static.analysis
            report.verdicts[claim.id] = static.verdict
            report.evidence.extend(e for e in static.evidence if e not in report.evidence)  # each item once
    for rule in all_rules():
        if _selected(rule, options):
            report.findings.extend(rule().check(context))
    if options.per_path_ignores:
        report.findings = [f for f in report.findings
                           if not ignored_for_path(f.rule, f.path, options.per_path_ignores, options.config_root)]
    return report


def rule_active(rule_id: str, path: str, options: CheckOptions) -> bool:
    """Whether rule ``rule_id`` runs on the file shown as ``path`` (selected, not ignored for it)."""
    rule = rule_by_id(rule_id)
    return (rule is not None and _selected(rule, options)
            and not ignored_for_path(rule.id, path, options.per_path_ignores, options.config_root))


def internal_error(display: str, doing: str, err: BaseException) -> str:
    """The one line that reports a bug of kvaudit met while analysing ``display`` (as the CLI's own, see
    ``cli.trace_options.internal_errors``)."""
    detail = error_line(err, _MESSAGE_WIDTH)
    return f"{display}: internal error in kvaudit while {doing}: {detail} (run with --debug for the traceback)"


# -- step 2: read and scan -------------------------------------------------------------------
@dataclass
class FileScan:
    """One file after reading and the cheap scan."""

    path: Path
    display: str
    status: str  # "ok" | "empty" | "error"
    message: str | None = None
    digest: str | None = None  # of the text, for the cache
    scan: TextScan | None = None  # None: not scanned (named on purpose, or no prefilter)
    suppression_text: str | None = None  # kept only when the file holds a kvaudit comment
    named: bool = False
    size: int = 0
    traceback: str | None = None


def text_digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def scan_file(path: Path, display: str, named: bool, want_scan: bool,
              previous: tuple[str, TextScan] | None = None,
              max_bytes: int | None = DEFAULT_MAX_FILE_BYTES) -> FileScan:
    """Read ``path`` and scan it; every failure becomes the file's status."""
    try:
        text = read_text(path, max_bytes)
    except SourceError as err:
        return FileScan(path, display, "error", f"{display}: {err}", named=named)
    except Exception as err:  # noqa: BLE001 - an internal error of this file only
        return FileScan(path, display, "error", internal_error(display, "reading it", err), named=named,
                        traceback=traceback.format_exc())
    if not text.strip():
        return FileScan(path, display, "empty", f"{display}: empty file", named=named)
    try:
        digest = text_digest(text)
        scan = None
        if want_scan and not named:
            scan = previous[1] if previous is not None and previous[0] == digest else scan_text(text)
        kept = text if MARKER in text.lower() else None
    except Exception as err:  # noqa: BLE001
        return FileScan(path, display, "error", internal_error(display, "scanning it", err), named=named,
                        traceback=traceback.format_exc())
    return FileScan(path, display, "ok", digest=digest, scan=scan, suppression_text=kept, named=named,
                    size=len(text))


@dataclass
class ScanTask:
    """Read and scan a few files (in a worker, or in-process)."""

    files: list[tuple[Path, str, bool]]  # path, display, named
    want_scan: bool
    previous: dict[Path, tuple[str, TextScan]] = field(default_factory=dict)
    max_bytes: int | None = DEFAULT_MAX_FILE_BYTES

    @property
    def size(self) -> int:
        return len(self.files)

    def __call__(self) -> list[FileScan]:
        return [scan_file(path, display, named, self.want_scan, self.previous.get(path), self.max_bytes)
                for path, display, named in self.files]

    def split(self) -> list[ScanTask]:
        return [ScanTask([entry], self.want_scan, self.previous, self.max_bytes) for entry in self.files]

    def crashed(self, reason: str) -> list[FileScan]:
        return [FileScan(path, display, "error", f"{display}: {reason}", named=named)
                for path, display, named in self.files]

    @classmethod
    def merge(cls, results: list[list[FileScan]]) -> list[FileScan]:
        return [scan for part in results for scan in part]


# -- step 3: parse, index and audit ----------------------------------------------------------
@dataclass
class FileAudit:
    """The presses of one parsed file, or why it could not be (fully) audited."""

    display: str
    reports: list[PressReport] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    tracebacks: list[str] = field(default_factory=list)


@dataclass
class AuditOutcome:
    files: list[FileAudit] = field(default_factory=list)
    # Files of the run, not parsed up front, that a base lookup found unreadable: path -> message.
    load_errors: dict[str, str] = field(default_factory=dict)
    aux_paths: set[str] = field(default_factory=set)  # files read outside the run (kvpress's source)
    notes: list[str] = field(default_factory=list)  # e.g. why --claim left a press alone
    warnings: list[str] = field(default_factory=list)  # an incomplete audit (kvpress's source unread)
    # Press-like classes deriving from a base kvaudit cannot read (a kvpress name the installed
    # kvpress lacks, a module not in the run), in file then source order.
    unanalysed: list[UnanalysedClass] = field(default_factory=list)
    # Modules looked up on disk: (name, folders searched or None for sys.path, file found or None).
    lookups: list[tuple[str, list[str] | None, str | None]] = field(default_factory=list)


def audit_files(files: list[tuple[Path, str]], owners: dict[str, list[Path]], roots: list[str],
                options: CheckOptions) -> AuditOutcome:
    """Parse ``files``, find their presses and audit each; one failure costs one file, never the run."""
    audits = {display: FileAudit(display) for _, display in files}
    index = ProjectIndex([], options.press_bases, owners=owners, roots=roots)

    def failed(display: str, message: str, with_traceback: bool = False) -> None:
        audits[display].errors.append(message)
        if with_traceback:
            audits[display].tracebacks.append(traceback.format_exc())

    for path, display in files:
        try:
            index.add_source(load_source(path, display, options.max_file_bytes))
        except SourceError as err:
            failed(display, f"{display}: {err}")
        except Exception as err:  # noqa: BLE001
            failed(display, internal_error(display, "indexing it", err), True)
    presses: list[ClassInfo] = []
    for info in index.modules:
        for cls in info.classes.values():
            try:
                if index.is_press(cls):
                    presses.append(cls)
            except Exception as err:  # noqa: BLE001
                failed(info.source.display, internal_error(info.source.display, f"resolving the bases of {cls.name}",
                                                           err), True)
    notes: list[str] = []
    warnings: list[str] = []
    try:
        warning = unread_base_warning(index, presses)
        if warning is not None:
            warnings.append(warning)
    except Exception as err:  # noqa: BLE001
        warnings.append(internal_error("the run", "checking for unread kvpress bases", err))
    for press in presses:
        display = press.source.display
        try:
            audits[display].reports.append(audit_press(index, press, options, notes))
        except RecursionError:
            failed(display, f"{display}: too deeply nested to analyse ({press.name})")
        except SourceError as err:  # libcst, parsing lazily, refused what CPython accepted
            failed(display, f"{display}: {press.name}: {err}")
        except Exception as err:  # noqa: BLE001
            failed(display, internal_error(display, f"auditing {press.name}", err), True)
    unanalysed: list[UnanalysedClass] = []
    for info in index.modules:
        try:
            unanalysed.extend(_unanalysed(index, info.source))
        except Exception as err:  # noqa: BLE001
            audits[info.source.display].errors.append(internal_error(info.source.display, "resolving its bases", err))
    return AuditOutcome(
        notes=notes, warnings=warnings, unanalysed=unanalysed,
        files=list(audits.values()),
        load_errors={display_path(path): f"{display_path(path)}: {message}"
                     for path, message in index.load_errors.items()},
        aux_paths={str(path) for path in index.aux_paths},
        lookups=[(name, list(search) if search is not None else None, found)
                 for (name, search), found in index.module_lookups.items()],
    )


@dataclass
class AuditTask:
    """Audit a few files (in a worker, or in-process), against the whole run's module map."""

    files: list[tuple[Path, str]]
    owners: dict[str, list[Path]]
    roots: list[str]
    options: CheckOptions

    @property
    def size(self) -> int:
        return len(self.files)

    def __call__(self) -> AuditOutcome:
        return audit_files(self.files, self.owners, self.roots, self.options)

    def split(self) -> list[AuditTask]:
        return [AuditTask([entry], self.owners, self.roots, self.options) for entry in self.files]

    def crashed(self, reason: str) -> AuditOutcome:
        return AuditOutcome(files=[FileAudit(display, errors=[f"{display}: {reason}"]) for _, display in self.files])

    @classmethod
    def merge(cls, results: list[AuditOutcome]) -> AuditOutcome:
        merged = AuditOutcome()
        for part in results:
            merged.files.extend(part.files)
            merged.load_errors.update(part.load_errors)
            merged.aux_paths |= part.aux_paths
            merged.notes.extend(part.notes)
            merged.warnings.extend(part.warnings)
            merged.unanalysed.extend(part.unanalysed)
            merged.lookups.extend(part.lookups)
        return merged


def _chunks(items: list, count: int, weight) -> list[list]:
    """Split ``items`` into about ``count`` contiguous runs of similar total weight.

    Contiguous: files of one folder tend to share bases, which a worker then reads once.
    """
    total = sum(weight(item) for item in items) or 1
    target = total / max(1, count)
    chunks: list[list] = [[]]
    acc = 0
    for item in items:
        if chunks[-1] and acc >= target:
            chunks.append([])
            acc = 0
        chunks[-1].append(item)
        acc += weight(item)
    return [chunk for chunk in chunks if chunk]


class _Progress:
    """What the engine tells a progress display (the CLI's rich bar, or nothing)."""

    def phase(self, description: str, total: int) -> None: ...

    def advance(self, amount: int) -> None: ...

    def close(self) -> None: ...


# -- the whole run ------------------------------------------------------------------------------
def run_check(targets: list[str], options: CheckOptions | None = None, progress: _Progress | None = None) -> AuditResult:
    """Audit ``targets`` statically. Never raises for bad input: it lands in ``files``.

    An exception inside kvaudit while it analyses one file becomes an error status of that
    file too (see :func:`internal_error`); the other files are still audited and reported.
    """
    options = options or CheckOptions()
    progress = progress or _Progress()
    try:
        return _run(targets, options, progress)
    finally:
        progress.close()


def _run(targets: list[str], options: CheckOptions, progress: _Progress) -> AuditResult:
    from .cache import RunCache  # small; imported here to keep the engine's import graph flat

    cache = RunCache.open(options.cache_dir)
    jobs = options.jobs or available_cores()
    runner = Runner(jobs, on_done=progress.advance)
    result = AuditResult()
    walked: dict[str, list[Path]] = {}  # folder target -> the files found in it
    paths, target_errors = expand_targets(targets, options.walk, walked)
    result.files.extend(FileStatus(path=e.target, status="error", message=e.message) for e in target_errors)

    named = named_files(targets)
    show = _display_paths()
    entries = [(path, show(path), path in named) for path in paths]
    previous = cache.scans(p for p, _, _ in entries) if cache else {}
    scan_tasks = [ScanTask(chunk, options.prefilter, {p: previous[p] for p, _, _ in chunk if p in previous},
                           options.max_file_bytes)
                  for chunk in _chunks(entries, max(1, len(entries) // _SCAN_CHUNK_FILES), lambda _: 1)]
    progress.phase("reading", len(entries))
    scans = ScanTask.merge(runner.run(scan_tasks, parallel=len(entries) >= _PARALLEL_SCAN_FILES))
    _report_tracebacks(options, [s.traceback for s in scans if s.traceback])

    for scan in scans:
        if scan.status == "error":
            result.files.append(FileStatus(path=scan.display, status="error", message=scan.message))
        elif scan.status == "empty":
            # Never an error, named or found: pre-commit passes every empty `__init__.py` it sees.
            result.files.append(FileStatus(path=scan.display, status="ok", message=scan.message))
    readable = [scan for scan in scans if scan.status == "ok"]
    key = cache.run_key(targets, options, scans) if cache else None
    cached = cache.load_result(key) if cache else None
    if cached is not None:
        return cached

    is_package = _package_test()
    # Every file of each module name (one per source tree), sorted: which one an import reads
    # depends on the importing file (analysis/index.py), never on the order of the targets.
    owners: dict[str, list[Path]] = {}
    roots: set[str] = set()
    for scan in readable:
        name = module_name_of(scan.path, is_package)
        owners.setdefault(name, []).append(scan.path)
        roots.add(str(source_root(scan.path, name)))
    for paths in owners.values():
        paths.sort()
    chosen = _to_parse(readable, options)

    weights = {scan.path: scan.size for scan in chosen}
    big = sum(weights.values()) >= _PARALLEL_AUDIT_BYTES and len(chosen) > 1
    audit_tasks = [AuditTask([(s.path, s.display) for s in chunk], owners, sorted(roots), options)
                   for chunk in _chunks(chosen, 2 * jobs if big else 1, lambda s: s.size + 2000)]
    progress.phase("auditing", len(chosen))
    outcome = AuditTask.merge(runner.run(audit_tasks, parallel=big))
    progress.close()  # before anything else reaches stderr
    _report_tracebacks(options, [t for audit in outcome.files for t in audit.tracebacks])

    failed: set[str] = set()
    for audit in outcome.files:
        result.presses.extend(audit.reports)
        for message in audit.errors:
            result.files.append(FileStatus(audit.display, "error", message))
            failed.add(audit.display)
    result.notes.extend(outcome.notes)
    result.warnings.extend(dict.fromkeys(outcome.warnings))
    for display, message in outcome.load_errors.items():
        if display not in failed:
            result.files.append(FileStatus(display, "error", message))
            failed.add(display)
    pressed = {p.path for p in result.presses}
    unanalysed: dict[str, list[UnanalysedClass]] = {}
    for item in outcome.unanalysed:
        unanalysed.setdefault(item.path, []).append(item)
    for scan in readable:
        if scan.display not in failed:
            message = None if scan.display in pressed else f"{scan.display}: no press classes" + "".join(
                f"; {item.name} derives from {item.base}, which "
                + ("the installed kvpress does not have" if item.reason == BASE_NOT_IN_KVPRESS else
                   "is neither in the run nor in kvpress") + ", so it is not audited"
                for item in unanalysed.get(scan.display, ()))
            result.files.append(FileStatus(path=scan.display, status="ok", message=message))
    _say_unanalysed(outcome.unanalysed, failed, result)
    _flag_directories_without_presses(walked, show, result)
    # Inline `# kvaudit: ignore[...]` comments, once every rule has run (KVA001, KVA002).
    texts = {s.display: s.suppression_text for s in readable if s.suppression_text and s.display not in failed}
    if options.static_rules:  # without rules every suppression would look unused
        apply_suppressions(result, texts,
                           lambda rule_id, path: rule_active(rule_id, path, options),
                           lambda rule_id: rule_by_id(rule_id) is not None,
                           on_error=lambda path, err: result.files.append(
                               FileStatus(path, "error", internal_error(path, "reading its suppression comments", err))))
    result.sort()
    if cache:
        cache.store(key, result, scans, outcome.aux_paths, outcome.lookups)
    return result


def _unanalysed(index: ProjectIndex, source: SourceFile) -> list[UnanalysedClass]:
    """The classes of ``source`` that look like presses but derive from a base kvaudit cannot read.

    A class deriving from a kvpress name the installed kvpress lacks is meant as a press. A class whose
    base lies in a module that is nowhere to be read could be anything: it counts when it looks like a
    press, by kvpress's naming (its name, or its base's, ends in ``Press``, as the prefilter's seeds)
    or by citing a paper of the registry.
    """
    found: list[UnanalysedClass] = []
    for cls, base, in_kvpress in index.unreadable_bases(source):
        if not in_kvpress and not (cls.name.endswith(PRESS_SUFFIX) or base.endswith(PRESS_SUFFIX)
                                   or find_paper(cls) is not None):
            continue
        found.append(UnanalysedClass(source.display, cls.name, cls.line, base,
                                     BASE_NOT_IN_KVPRESS if in_kvpress else BASE_NOT_IN_RUN))
    return found


def _say_unanalysed(unanalysed: list[UnanalysedClass], failed: set[str], result: AuditResult) -> None:
    """Each unanalysed class of a file that could be read: in the result, and as a warning line of the run."""
    kept = sorted((u for u in unanalysed if u.path not in failed), key=lambda u: (u.path, u.line, u.name, u.base))
    result.unanalysed.extend(kept)
    hint = {BASE_NOT_IN_RUN: "name the base's file or package among the targets, or declare it under "
                             "[[press-bases]] in the configuration",
            BASE_NOT_IN_KVPRESS: "it may come from another kvpress release"}
    result.warnings.extend(dict.fromkeys(f"{u.path}:{u.line}: {u.name} is not analysed: {u.why} ({hint[u.reason]})"
                                         for u in kept))


def _to_parse(readable: list[FileScan], options: CheckOptions) -> list[FileScan]:
    """The files to parse: those that may define a press, and every file named on purpose."""
    if not options.prefilter:
        return list(readable)
    scanned = {i: scan.scan for i, scan in enumerate(readable) if scan.scan is not None}
    # A configured press base (`[[press-bases]]`) is a root too, by its class name.
    seeds = {base.cls.rpartition(".")[2] for base in options.press_bases}
    candidates = press_candidates(scanned, seeds) if scanned else set()
    return [scan for i, scan in enumerate(readable) if scan.scan is None or i in candidates]


def named_files(targets: list[str]) -> set[Path]:
    """Files a target names one by one (not found by walking a folder or package): always parsed."""
    named: set[Path] = set()
    for target in targets:
        try:
            path = Path(target)
            if target.strip() and path.is_file():
                named.add(path.resolve())
            elif target.strip() and not path.exists() and looks_like_module(target):
                resolved = resolve_module(target)
                if resolved is not None and resolved.name != "__init__.py":
                    named.add(resolved.resolve())
        except (OSError, RuntimeError, ValueError):
            continue
    return named


def _display_paths():
    """``display_path`` for the resolved paths of ``expand_targets``, without resolving them again."""
    cwd = Path.cwd().resolve()

    def show(path: Path) -> str:
        if not path.is_absolute():
            return display_path(path)
        try:
            return path.relative_to(cwd).as_posix()
        except ValueError:
            return path.as_posix()

    return show


def _package_test():
    folders: dict[Path, bool] = {}

    def is_package(folder: Path) -> bool:
        if folder not in folders:
            try:
                folders[folder] = (folder / "__init__.py").exists()
            except (OSError, ValueError):
                folders[folder] = False
        return folders[folder]

    return is_package


def _report_tracebacks(options: CheckOptions, tracebacks: list[str]) -> None:
    if options.debug:
        for text in tracebacks:
            sys.stderr.write(text if text.endswith("\n") else text + "\n")


def _flag_directories_without_presses(walked: dict[str, list[Path]], show, result: AuditResult) -> None:
    """A folder handed to ``check`` is expected to hold presses: say so when none of the files found
    in it (through symbolic links too) holds one, and how many press-like classes in it could not be
    analysed (their bases cannot be read). Decided from the walk, never from path prefixes."""
    pressed = {press.path for press in result.presses}
    for target, files in walked.items():
        if any(show(path) in pressed for path in files):
            continue
        if not any(f.path == target for f in result.files):
            shown = {show(path) for path in files}
            unread = len({(u.path, u.name) for u in result.unanalysed if u.path in shown})
            why = f" ({unread} class(es) not analysed: see the warnings)" if unread else ""
            result.files.append(FileStatus(path=target, status="error",
                                           message=f"{cut_target(target)}: no press classes found{why}"))
