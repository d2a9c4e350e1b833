"""The classroom kit's autograders can pass and can fail, and its handout holds no answer. Each grader runs
once per assignment, in a fresh pytest process as a student would run it, on several files at once
(STUDENT_FILE=a.py:b.py:...): the reference solution (every check passes), the pristine skeleton (every
check fails with a 'not implemented' message), deliberately broken copies of the solution (rejected), copies
that import the answer from the repository (rejected, saying so) and copies that read the repository's
source or a solution while they run, by any route (rejected, saying so). A check that runs past the time
limit fails. `python assignments/handout.py OUT_DIR` writes a copy without the solutions whose own tests pass.

The broken and cheating copies quote the solutions, so they live beside them (assignments/solutions/
variants.py); in a student's copy, which has neither, the tests that need them skip and say why."""
import importlib.util
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOLUTIONS = os.path.join(ROOT, "assignments", "solutions")
NO_SOLUTIONS = ("assignments/solutions/ is not in this copy (a student's copy written by assignments/handout.py): "
                "the graders are tested against the solutions in the teacher's copy")


def _load(path: str, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


handout = _load(os.path.join(ROOT, "assignments", "handout.py"), "assignments_handout")
ASSIGNMENTS = handout.assignments(ROOT)
_variants_file = os.path.join(SOLUTIONS, "variants.py")
variants = _load(_variants_file, "assignments_variants") if os.path.isfile(_variants_file) else None
BROKEN = variants.BROKEN if variants else {}
IMPORTS_THE_ANSWER = variants.IMPORTS_THE_ANSWER if variants else []
READS_THE_ANSWER = variants.READS_THE_ANSWER if variants else []


def needs_solutions(cases: list, ids: list) -> list:
    """The cases as pytest parameters; without the solutions, one parameter that skips and says why."""
    if variants is None:
        return [pytest.param(None, id="no-solutions", marks=pytest.mark.skip(reason=NO_SOLUTIONS))]
    return [pytest.param(c, id=i) for c, i in zip(cases, ids)]


def solution(assignment: str) -> str:
    return open(os.path.join(SOLUTIONS, f"{assignment}.py")).read()


def run_grader(assignment: str, files: list, folder, env_extra: dict = None) -> dict:
    """Grade `files` with the assignment's grader in one pytest process (its report goes to `folder`):
    {"results": {file stem: {check: (outcome, message)}}, "log": its output}; outcome "passed", "failed" or
    "error" (the check's setup failed)."""
    report = os.path.join(str(folder), f"report_{assignment}.xml")
    # These tests check what the graders decide, not how fast this machine is: a CI machine busy with other
    # work must not fail a solution on the 10 s per-check limit (test_a_check_past_the_time_limit_fails
    # tests the limit itself, with its own value).
    env = {**os.environ, "GRADING_TIME_LIMIT": "120", "STUDENT_FILE": os.pathsep.join(files), **(env_extra or {})}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
                          f"assignments/{assignment}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    results = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        check, _, stem = case.get("name").partition("[")
        outcome, message = "passed", ""
        for tag in ("failure", "error"):
            node = case.find(tag)
            if node is not None:
                outcome, message = ("failed" if tag == "failure" else "error"), (node.get("message") or "") + (node.text or "")
        results.setdefault(stem.rstrip("]"), {})[check] = (outcome, message)
    return {"results": results, "log": out.stdout + out.stderr}


def _edited(assignment: str, edit, header: str) -> str:
    source = solution(assignment)
    if edit:
        source = source.replace(*edit)
    return header + source


@pytest.fixture(scope="session")
def graded(tmp_path_factory):
    """graded(assignment) -> run_grader's answer for the pristine skeleton and, where the solutions are here,
    the solution, the broken copies and the copies that import or read the answer; run once per assignment
    and session."""
    cache = {}

    def get(assignment):
        if assignment not in cache:
            folder = tmp_path_factory.mktemp(assignment)
            files = [os.path.join(SOLUTIONS, f"{assignment}.py")] if variants else []
            skeleton, _ = handout.pristine_skeleton(ROOT, assignment)
            if skeleton is not None:                     # not the student.py being worked on: the skeleton
                (folder / "skeleton.py").write_text(skeleton)
                files.append(str(folder / "skeleton.py"))
            for i, (_, old, new) in enumerate(BROKEN.get(assignment, [])):
                (folder / f"broken{i}.py").write_text(solution(assignment).replace(old, new))
                files.append(str(folder / f"broken{i}.py"))
            for i, (a, _, _, edit, header) in enumerate(IMPORTS_THE_ANSWER):
                if a == assignment:
                    (folder / f"imports{i}.py").write_text(_edited(a, edit, header))
                    files.append(str(folder / f"imports{i}.py"))
            for i, (a, _, _, edit, header, _) in enumerate(READS_THE_ANSWER):
                if a == assignment:
                    (folder / f"reads{i}.py").write_text(_edited(a, edit, header))
                    files.append(str(folder / f"reads{i}.py"))
            cache[assignment] = run_grader(assignment, files, folder)
        return cache[assignment]
    return get


# ----------------------------------------------------------------------------------------------------
# The graders pass the solution and fail the skeleton, broken copies and copies that take the answer
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("assignment", needs_solutions(sorted(BROKEN), sorted(BROKEN)))
def test_grader_passes_the_solution(assignment, graded):
    g = graded(assignment)
    checks = g["results"].get(assignment)
    assert checks and all(o == "passed" for o, _ in checks.values()), g["log"]
    if "skeleton" in g["results"]:
        assert set(g["results"]["skeleton"]) == set(checks), g["log"]


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_grader_fails_the_skeleton(assignment, graded):
    # the pristine skeleton (assignments/handout.py): a student.py being filled in does not count
    skeleton, why = handout.pristine_skeleton(ROOT, assignment)
    if skeleton is None:
        pytest.skip(why)
    g = graded(assignment)
    checks = g["results"].get("skeleton")
    assert checks and all(o == "failed" for o, _ in checks.values()), g["log"]
    assert any("not implemented yet" in m for _, m in checks.values()), g["log"]


@pytest.mark.parametrize("case", needs_solutions(
    [(a, i) for a, bs in sorted(BROKEN.items()) for i in range(len(bs))],
    [f"{a}-{b[0].replace(' ', '_')}" for a, bs in sorted(BROKEN.items()) for b in bs]))
def test_grader_rejects_a_broken_solution(case, graded):
    assignment, i = case
    _, old, _ = BROKEN[assignment][i]
    assert old in solution(assignment), f"the broken variant no longer applies to the solution: {old!r}"
    g = graded(assignment)
    checks = g["results"][f"broken{i}"]
    assert any(o == "failed" for o, _ in checks.values()), g["log"]


@pytest.mark.parametrize("i", needs_solutions(list(range(len(IMPORTS_THE_ANSWER))),
                                              [f"{c[0]}-{c[1].replace(' ', '_')}" for c in IMPORTS_THE_ANSWER]))
def test_grader_rejects_a_file_that_imports_the_answer(i, graded):
    assignment, _, module, edit, _ = IMPORTS_THE_ANSWER[i]
    assert edit is None or edit[0] in solution(assignment), f"the edit no longer applies: {edit[0]!r}"
    g = graded(assignment)
    checks = g["results"][f"imports{i}"]
    assert all(o in ("failed", "error") for o, _ in checks.values()), g["log"]
    assert all(f"imports {module}" in m or f"imported {module}" in m for _, m in checks.values()), g["log"]


@pytest.mark.parametrize("i", needs_solutions(list(range(len(READS_THE_ANSWER))),
                                              [f"{c[0]}-{c[1].replace(' ', '_')}" for c in READS_THE_ANSWER]))
def test_grader_rejects_a_file_that_reads_the_answer(i, graded):
    # exec(open('metrics.py').read()), spec_from_file_location, pathlib, io.open, os.open, a symlink, an import
    # the source check cannot see, a solution's file, the error caught, an object the grader calls later
    assignment, _, answer, edit, _, must_fail = READS_THE_ANSWER[i]
    assert edit is None or edit[0] in solution(assignment), f"the edit no longer applies: {edit[0]!r}"
    g = graded(assignment)
    checks = g["results"][f"reads{i}"]
    for check in must_fail or checks:
        outcome, message = checks[check]
        assert outcome in ("failed", "error") and f"reads {answer}" in message, (check, g["log"])
    assert all(f"reads {answer}" in m for o, m in checks.values() if o != "passed"), g["log"]


# a file whose monotonic_beta never returns; the other two functions are stubs
ENDLESS = '''
def monotonic_beta(step, warmup_steps, beta_start=0.1, beta_max=1.0):
    while True:
        pass


def cyclical_beta(step, total_steps, cycles=4, ratio=0.5, beta_max=1.0):
    raise NotImplementedError


def kl_and_au(log_csv):
    raise NotImplementedError
'''


def test_a_check_past_the_time_limit_fails(tmp_path):
    path = tmp_path / "endless.py"
    path.write_text(ENDLESS)
    g = run_grader("04_posterior_collapse", [str(path)], tmp_path, {"GRADING_TIME_LIMIT": "1"})
    checks = g["results"]["endless"]
    assert checks["test_monotonic_schedule"][0] == "failed", g["log"]
    assert "ran longer than 1 s" in checks["test_monotonic_schedule"][1], g["log"]
    # the alarm is disarmed after the check: the next ones run to their own end ("not implemented yet")
    others = [v for c, v in checks.items() if c != "test_monotonic_schedule"]
    assert others and all(o == "failed" and "not implemented yet" in m for o, m in others), g["log"]


# ----------------------------------------------------------------------------------------------------
# The handout: the skeletons as handed out, and a copy without the answers whose tests pass
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_a_skeleton_is_recognised_and_a_filled_in_file_is_not(assignment):
    skeleton, why = handout.pristine_skeleton(ROOT, assignment)
    if skeleton is None:
        pytest.skip(why)
    assert handout.is_skeleton(skeleton)
    assert not handout.is_skeleton(skeleton.replace("raise NotImplementedError", "return None", 1))
    assert not handout.is_skeleton(skeleton + "\n\ndef helper():\n    return 1\n")
    assert not handout.is_skeleton(skeleton + "\nx = 1\n")
    assert not handout.is_skeleton(skeleton + "\ndef broken(:\n")


def _git(cwd, *args):
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                          capture_output=True, text=True)


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_a_filled_in_student_file_is_handed_out_as_the_skeleton_in_git(tmp_path):
    folder = tmp_path / "assignments" / "01_x"
    folder.mkdir(parents=True)
    (folder / "test_grader.py").write_text("")
    stub = '"""Fill in f."""\n\n\ndef f(x):\n    """Twice x."""\n    raise NotImplementedError\n'
    (folder / "student.py").write_text(stub)
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-q", "-m", "skeleton")
    assert handout.pristine_skeleton(str(tmp_path), "01_x") == (stub, "student.py")
    (folder / "student.py").write_text(stub.replace("raise NotImplementedError", "return 2 * x"))
    assert handout.pristine_skeleton(str(tmp_path), "01_x") == (stub, "git HEAD")
    shutil.rmtree(tmp_path / ".git")
    source, why = handout.pristine_skeleton(str(tmp_path), "01_x")
    assert source is None and "has been filled in" in why and "restore" in why


def _handout(out) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, os.path.join("assignments", "handout.py"), str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def _files(top) -> set:
    return {os.path.relpath(os.path.join(d, f), top).replace(os.sep, "/") for d, _, fs in os.walk(top) for f in fs}


def test_the_handout_leaves_out_the_answers_and_skips_what_needs_them(tmp_path):
    out = tmp_path / "handout"
    done = _handout(out)
    assert done.returncode == 0, done.stdout + done.stderr
    files = _files(out)
    assert files == set(handout.files_to_copy(ROOT))
    assert "tests/test_assignments.py" in files and "assignments/grading.py" in files
    assert not [f for f in files if f.startswith(("assignments/solutions/", "runs/", ".git/"))
                or "/__pycache__/" in "/" + f or f.endswith(".pyc")]
    for a in ASSIGNMENTS:
        assert handout.is_skeleton((out / "assignments" / a / "student.py").read_text()), a
    top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=ROOT, capture_output=True, text=True) \
        if shutil.which("git") else None
    if top is not None and top.returncode == 0 and os.path.realpath(top.stdout.strip()) == os.path.realpath(ROOT):
        # .gitignore read as git reads it: the copy is git's view of the repository without the answers
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                                capture_output=True, text=True, check=True).stdout.split("\0")
        expected = {f for f in listed if f and os.path.isfile(os.path.join(ROOT, f))
                    and not f.startswith(("assignments/solutions/", "runs/")) and "__pycache__/" not in f}
        assert files == expected, (sorted(files - expected)[:10], sorted(expected - files)[:10])
    # in the copy, what needs the solutions skips and says why (the graders' runs are in the slow test below)
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                          "tests/test_assignments.py", "-k", "solution or imports or reads"], cwd=out,
                         capture_output=True, text=True, timeout=300)
    counts = _summary(run.stdout)
    assert run.returncode == 0 and counts.get("skipped") == 4 and not counts.get("passed"), run.stdout
    assert "assignments/solutions/ is not in this copy" in run.stdout, run.stdout
    # a second handout into the same folder, or one inside the repository, is refused
    assert _handout(out).returncode == 2
    inside = _handout(os.path.join(ROOT, "runs", "handout"))
    assert inside.returncode == 2 and "inside the repository" in inside.stderr


def _summary(stdout: str) -> dict:
    """pytest -q's last line as {"passed": n, "skipped": n, ...}."""
    last = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    return {word.strip(","): int(n) for n, word in zip(last.split()[::2], last.split()[1::2]) if n.isdigit()}


@pytest.mark.slow
@pytest.mark.skipif(variants is None, reason=NO_SOLUTIONS + "; a handout is made and checked from there")
def test_the_handout_copy_passes_its_own_tests(tmp_path):
    out = tmp_path / "handout"
    assert _handout(out).returncode == 0
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                          "tests/test_assignments.py"], cwd=out, capture_output=True, text=True, timeout=900)
    counts = _summary(run.stdout)
    assert run.returncode == 0 and not counts.get("failed") and not counts.get("error"), run.stdout + run.stderr
    # the skeleton checks, the time limit and the handout's own tests ran; what needs the solutions skipped
    assert counts.get("passed", 0) >= 2 * len(ASSIGNMENTS) + 2 and counts.get("skipped", 0) >= 4, run.stdout


# ----------------------------------------------------------------------------------------------------
# The handouts' commands: flags the scripts have, and a run short of an epoch still writes validation rows
# ----------------------------------------------------------------------------------------------------


def _handout_commands() -> list:
    """(assignment, script, [flags and values]) for every `python script.py ...` line of a handout."""
    found = []
    for a in ASSIGNMENTS:
        for line in open(os.path.join(ROOT, "assignments", a, "README.md"), encoding="utf-8"):
            words = line.split()
            if len(words) > 1 and words[0] == "python" and words[1].endswith(".py") and "/" not in words[1]:
                found.append((a, words[1], words[2:]))
    return found


def test_the_handouts_commands_use_flags_the_scripts_have_and_validate_within_the_run():
    commands = _handout_commands()
    assert any(a == "04_posterior_collapse" for a, _, _ in commands)
    helps = {}
    for a, script, args in commands:
        if script not in helps:
            run = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True,
                                 timeout=300)
            assert run.returncode == 0, run.stderr
            helps[script] = set(run.stdout.replace(",", " ").replace("[", " ").replace("]", " ").split())
        flags = [w for w in args if w.startswith("--")]
        assert not [f for f in flags if f not in helps[script]], (a, script, flags)
        value = {f: args[args.index(f) + 1] for f in ("--max_steps", "--val_every") if f in args}
        if int(value.get("--max_steps", 0)) > 0:
            # an epoch of PTB is 1,359 steps: a run shorter than that validates only through --val_every
            every = int(value.get("--val_every", 0))
            assert 0 < every <= int(value["--max_steps"]), (a, " ".join([script] + args))
