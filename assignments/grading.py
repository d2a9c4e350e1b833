"""Shared by the autograders: load the file(s) being graded, refuse a file that imports the repository's
own code instead of implementing it or reads its source (or the solutions') while it runs, turn "not
implemented yet" into a clear message, and stop a check that runs too long.

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
SOLUTIONS = os.path.join(ROOT, "assignments", "solutions")          # absent from a student's copy
RULE = (f"a graded file may use PyTorch and Python's standard library, not the repository's "
        f"{', '.join(m + '.py' for m in REPOSITORY_MODULES)}, nor read their source or assignments/solutions/")
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
    pytest.fail(f"{os.path.basename(path)} imports {module}{where}: implement {what} yourself ({RULE})",
                pytrace=False)


def _reject_reading(path: str, answer: str, grader_file: str, where: str):
    _Guard.reported = True
    what = ", ".join(_graded_names(grader_file)) or "it"
    pytest.fail(f"{os.path.basename(path)} reads {answer}{where}: implement {what} yourself ({RULE})",
                pytrace=False)


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
    with reading_guard(path):
        n_read = len(_Guard.read)
        try:
            spec.loader.exec_module(module)
        except Exception:
            if len(_Guard.read) == n_read:              # a plain error in the file: pytest shows it
                raise
    if len(_Guard.read) > n_read:                        # caught or not, reading the answers fails
        _reject_reading(path, _Guard.read[n_read], grader_file, " while it loads")
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
    with reading_guard():
        n_read = len(_Guard.read)
        try:
            out = fn(*args, **kwargs)
        except NotImplementedError:
            out = NotImplemented                         # fail outside the handler: no chained traceback
        except Exception:
            if len(_Guard.read) == n_read:               # a plain error in the graded code: pytest shows it
                raise
    if len(_Guard.read) > n_read:                        # caught or not, reading the answers fails
        _Guard.reported = True
        pytest.fail(f"`{name}` reads {_Guard.read[n_read]} while it runs: implement {name} yourself ({RULE})",
                    pytrace=False)
    if out is NotImplemented:
        pytest.fail(f"`{name}` is not implemented yet (it raises NotImplementedError): fill it in", pytrace=False)
    sneaked = _sneaked_in(_modules_before) if _modules_before else ""
    if sneaked:
        pytest.fail(f"`{name}` imported {sneaked} while it ran: implement {name} yourself", pytrace=False)
    return out


# ----------------------------------------------------------------------------------------------------
# Reading the answers: an audit hook on "open" while a graded file loads or a check runs
# ----------------------------------------------------------------------------------------------------


class ReadsTheAnswer(PermissionError):
    """Raised inside the graded code when it opens, for reading, a file that holds the answers."""


class _Guard:
    """State of the audit hook. Audit hooks cannot be removed (sys.addaudithook), so the hook is installed
    once and does nothing unless `depth` > 0: while a graded file loads, a graded function runs (`call`), or
    a check runs (assignments/conftest.py arms it for the whole setup and call of every check)."""
    installed = False
    depth = 0
    allowed = set()          # realpaths of the graded file and its bytecode cache: loading it opens them
    read = []                # the answer files opened (relative to ROOT) since the outermost guard was armed
    reported = False         # a check already failed on `read` with a precise message
    files = {}               # {(st_dev, st_ino): path relative to ROOT} of the answer files, on first use
    dirs = ()                # realpaths of folders whose every file holds answers


def _answers():
    """Fill _Guard.files and _Guard.dirs: the repository's modules (ROOT/*.py), their compiled copies in
    ROOT/__pycache__, every file under assignments/solutions/, and the git objects (.git/) that hold them all.
    Files are also matched by inode, so a hard link, a symlink or another spelling of the name is caught."""
    dirs = [os.path.join(ROOT, d) for d in ("__pycache__", ".git")] + [SOLUTIONS]
    paths = [os.path.join(ROOT, m + ".py") for m in REPOSITORY_MODULES]
    for d in dirs[:1] + dirs[2:]:
        for folder, _, names in os.walk(d):
            paths += [os.path.join(folder, n) for n in names]
    files = {}
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            continue
        files[(st.st_dev, st.st_ino)] = _name(os.path.relpath(p, ROOT))
    _Guard.files, _Guard.dirs = files, tuple(os.path.realpath(d) + os.sep for d in dirs)


def _name(relative: str) -> str:
    """How a message names an answer file: "metrics.py", "metrics.py (compiled: __pycache__/metrics....pyc)",
    "assignments/solutions/01_dual_kl.py"."""
    relative = relative.replace(os.sep, "/")
    folder, _, file = relative.rpartition("/")
    if folder == "__pycache__" and file.split(".")[0] in REPOSITORY_MODULES:
        return f"{file.split('.')[0]}.py (compiled: {relative})"
    return relative


def answer_file(path) -> str:
    """The answer file `path` names (relative to ROOT, e.g. "metrics.py"), or ""."""
    real = os.path.realpath(os.fsdecode(path))
    if real in _Guard.allowed:
        return ""
    try:
        st = os.stat(real)
        hit = _Guard.files.get((st.st_dev, st.st_ino))
    except OSError:
        hit = None
    if hit:
        return hit
    if real.startswith(_Guard.dirs):
        return _name(os.path.relpath(real, os.path.realpath(ROOT)))
    return ""


def _audit(event: str, args: tuple):
    # builtins.open, io.open, pathlib's read_text, io.open_code (the import system, runpy,
    # spec_from_file_location), os.open and io.FileIO all raise the "open" event: (path, mode, flags)
    if event != "open" or not _Guard.depth:
        return
    path, _, flags = args
    if isinstance(path, int) or path is None:            # an already open file descriptor
        return
    if isinstance(flags, int) and flags & getattr(os, "O_ACCMODE", 3) == os.O_WRONLY:
        return                                           # writing (the bytecode cache of the graded file)
    answer = answer_file(path)
    if answer:
        _Guard.read.append(answer)                       # remembered even if the graded code catches the error
        raise ReadsTheAnswer(f"the grader refuses to open {answer} while a graded file runs ({RULE})")


@contextlib.contextmanager
def reading_guard(graded_path: str = ""):
    """While the block runs, opening an answer file for reading raises ReadsTheAnswer and appends it to
    _Guard.read. Nested guards share the state; the outermost one starts afresh. `graded_path` (and its
    bytecode cache) may be opened: loading the graded file reads it."""
    if not _Guard.installed:
        _answers()
        sys.addaudithook(_audit)
        _Guard.installed = True
    if not _Guard.depth:
        _Guard.read, _Guard.reported, _Guard.allowed = [], False, set()
    if graded_path:
        _Guard.allowed.add(os.path.realpath(graded_path))
        with contextlib.suppress(ValueError, NotImplementedError):
            _Guard.allowed.add(os.path.realpath(importlib.util.cache_from_source(graded_path)))
    _Guard.depth += 1
    try:
        yield
    finally:
        _Guard.depth -= 1


def unreported_reading(path: str) -> str:
    """After a check: a message if the graded code opened an answer file that no failure reported yet
    (e.g. a method the grader called directly), else ""."""
    if not _Guard.read or _Guard.reported:
        return ""
    return (f"{os.path.basename(path or 'the graded file')} reads {_Guard.read[0]} during this check: "
            f"implement it yourself ({RULE})")


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
