"""Shared by the autograders: load the file(s) being graded, refuse a file that imports the repository's
own code instead of implementing it, turn "not implemented yet" into a clear message, and stop a check
that runs too long.

A grader grades `student.py` next to it, or the file(s) named by the environment variable STUDENT_FILE:
one path, or several separated by os.pathsep (":" on Linux/macOS); each check then runs once per file, its
id naming the file (`test_x[alice]`). The instructor's solutions and the test suite use that.

Uses only the standard library and pytest (the fixture, the failure messages); it never imports the
repository's modules, so it keeps working while the scripts change.
"""
import ast
import contextlib
import importlib.util
import os
import signal
import sys
import threading

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))     # the repository
# The repository's own modules (metrics.py, ivae.py, ivae_mi.py, vae.py, data.py, the other scripts): a
# graded file must implement its functions, not import them from here.
REPOSITORY_MODULES = sorted(f[:-3] for f in os.listdir(ROOT) if f.endswith(".py"))
TIME_LIMIT_S = float(os.environ.get("GRADING_TIME_LIMIT", "10"))      # per check; a slow machine may raise it
_modules_before = set()             # sys.modules before the file being graded was loaded: what it may not add


# ----------------------------------------------------------------------------------------------------
# Which files, and loading them
# ----------------------------------------------------------------------------------------------------


def student_files(grader_file: str) -> list:
    paths = os.environ.get("STUDENT_FILE")
    if not paths:
        return [os.path.join(os.path.dirname(grader_file), "student.py")]
    return [p for p in paths.split(os.pathsep) if p]


def _ids(paths: list) -> list:
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    return [s if stems.count(s) == 1 else f"{i}-{s}" for i, s in enumerate(stems)]


def student_fixture(grader_file: str):
    """The `student` fixture of a grader: the loaded module, once per graded file (module scope)."""
    paths = student_files(grader_file)

    @pytest.fixture(scope="module", params=paths, ids=_ids(paths))
    def student(request):
        return load_student(request.param, grader_file)
    return student


def _graded_names(grader_file: str) -> list:
    """The skeleton's top-level functions and classes: what the student implements."""
    skeleton = os.path.join(os.path.dirname(grader_file), "student.py")
    try:
        tree = ast.parse(open(skeleton, encoding="utf-8").read())
    except (OSError, SyntaxError):
        return []
    return [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]


def _root(name) -> str:
    return name.split(".")[0] if isinstance(name, str) else ""


def forbidden_imports(source: str) -> list:
    """(line, module, names) for every import of a repository module in `source`, wherever it sits
    (top level or inside a function): `import metrics`, `from ivae import X`, `__import__("vae")`,
    `importlib.import_module("data")`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, _root(a.name), []) for a in node.names if _root(a.name) in REPOSITORY_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and _root(node.module) in REPOSITORY_MODULES:
            found.append((node.lineno, _root(node.module), [a.name for a in node.names]))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            fn = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if fn in ("__import__", "import_module") and _root(node.args[0].value) in REPOSITORY_MODULES:
                found.append((node.lineno, _root(node.args[0].value), []))
    return found


def _reject(path: str, module: str, names: list, grader_file: str, where: str):
    what = ", ".join(names) if names and names != ["*"] else ", ".join(_graded_names(grader_file)) or "it"
    pytest.fail(f"{os.path.basename(path)} imports {module}{where}: implement {what} yourself (a graded file "
                f"may use PyTorch and Python's standard library, not the repository's "
                f"{', '.join(m + '.py' for m in REPOSITORY_MODULES)})", pytrace=False)


def load_student(path: str, grader_file: str):
    """Load the graded file as a fresh module, after checking that it imports none of the repository's
    modules (its source, then what appeared in sys.modules while it was loading)."""
    if not os.path.isfile(path):
        pytest.fail(f"no file to grade at {path}", pytrace=False)
    source = open(path, encoding="utf-8").read()
    try:
        found = forbidden_imports(source)
    except SyntaxError as e:
        pytest.fail(f"{os.path.basename(path)} does not parse: {e}", pytrace=False)
    if found:
        line, module, names = found[0]
        _reject(path, module, names, grader_file, f" (line {line})")
    before = set(sys.modules)
    spec = importlib.util.spec_from_file_location(f"graded_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sneaked = _sneaked_in(before)
    if sneaked:
        _reject(path, sneaked, [], grader_file, " (while loading)")
    _modules_before.clear()
    _modules_before.update(before)
    return module


def _sneaked_in(before: set) -> str:
    """A repository module imported since `before` (then forgotten, so the next graded file is checked
    afresh), or ""."""
    new = sorted({_root(m) for m in set(sys.modules) - before} & set(REPOSITORY_MODULES))
    for m in [m for m in sys.modules if _root(m) in new]:
        del sys.modules[m]
    return new[0] if new else ""


def call(module, name: str, *args, **kwargs):
    """module.name(*args, **kwargs), failing the check with a readable message if it is missing, a stub,
    or pulls in a repository module while it runs."""
    fn = getattr(module, name, None)
    if fn is None:
        pytest.fail(f"`{name}` is missing from the graded file", pytrace=False)
    try:
        out = fn(*args, **kwargs)
    except NotImplementedError:
        out = NotImplemented                             # fail outside the handler: no chained traceback
    if out is NotImplemented:
        pytest.fail(f"`{name}` is not implemented yet (it raises NotImplementedError): fill it in", pytrace=False)
    sneaked = _sneaked_in(_modules_before) if _modules_before else ""
    if sneaked:
        pytest.fail(f"`{name}` imported {sneaked} while it ran: implement {name} yourself", pytrace=False)
    return out


# ----------------------------------------------------------------------------------------------------
# A time limit per check (used by assignments/conftest.py for every check)
# ----------------------------------------------------------------------------------------------------


class CheckTimeout(Exception):
    """A check ran longer than its time limit."""


@contextlib.contextmanager
def time_limit(seconds: float, what: str = "this check"):
    """Raise CheckTimeout in the block once `seconds` of wall time have passed (SIGALRM: Linux and macOS,
    main thread only; elsewhere the block runs without a limit). A long single PyTorch operation is
    interrupted when it returns to Python."""
    if seconds <= 0 or not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum, frame):
        raise CheckTimeout(f"{what} ran longer than {seconds:g} s, the time limit of every check: an endless "
                           f"loop, or far more work than the handout asks for? (GRADING_TIME_LIMIT=30 raises "
                           f"the limit on a slow machine)")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
