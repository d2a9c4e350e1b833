"""Write the copy of the repository a teacher hands out: everything but the answers.

    python assignments/handout.py OUT_DIR            # OUT_DIR: new or empty, outside the repository

The copy leaves out assignments/solutions/ (the reference solutions and the broken and cheating variants
the test suite grades), .git, runs/, __pycache__, .pytest_cache and whatever .gitignore ignores (its
patterns read as git reads them: `*` within one folder, a leading `/` anchors, a trailing `/` means a
folder, `!` re-includes, the last matching line wins, a file under an ignored folder stays out; `**` is not
read). Each assignments/NN_name/student.py in the copy is the skeleton (every function raising
NotImplementedError): yours if it still is one, else the one in git HEAD; if neither is, nothing is written
and the command says which file to restore. In the copy, `pytest -q` passes: the tests of
tests/test_assignments.py that need the solutions skip, saying so.

Uses only the standard library (and git, if there, for a skeleton you have filled in).
"""
import argparse
import ast
import fnmatch
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))     # the repository
SOLUTIONS = "assignments/solutions"
# left out whatever .gitignore says: the answers, git's history, run outputs, caches
LEFT_OUT = {SOLUTIONS, "runs"}                                  # paths from the root
LEFT_OUT_ANYWHERE = {".git", "__pycache__", ".pytest_cache"}    # names, at any depth


# ----------------------------------------------------------------------------------------------------
# Which files: the repository as git sees it, without the answers
# ----------------------------------------------------------------------------------------------------


def ignore_rules(root: str) -> list:
    """.gitignore's lines as (negated, folder only, anchored, pattern)."""
    rules = []
    try:
        lines = open(os.path.join(root, ".gitignore"), encoding="utf-8").read().splitlines()
    except OSError:
        return rules
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated, line = line.startswith("!"), line.lstrip("!")
        folder_only, line = line.endswith("/"), line.rstrip("/")
        anchored = "/" in line                      # "/data/*", "docs/x.png": relative to the root
        rules.append((negated, folder_only, anchored, line.lstrip("/")))
    return rules


def _matches(pattern: str, anchored: bool, relative: str) -> bool:
    if not anchored:                                # "*.pt", "__pycache__": the name, at any depth
        return fnmatch.fnmatchcase(relative.rsplit("/", 1)[-1], pattern)
    parts, pattern_parts = relative.split("/"), pattern.split("/")
    return len(parts) == len(pattern_parts) and all(map(fnmatch.fnmatchcase, parts, pattern_parts))


def ignored(relative: str, is_folder: bool, rules: list) -> bool:
    """Whether .gitignore ignores `relative` itself (its folders are checked as the walk reaches them)."""
    if relative in LEFT_OUT or relative.rsplit("/", 1)[-1] in LEFT_OUT_ANYWHERE:
        return True
    verdict = False
    for negated, folder_only, anchored, pattern in rules:
        if (is_folder or not folder_only) and _matches(pattern, anchored, relative):
            verdict = not negated                   # the last matching line wins
    return verdict


def files_to_copy(root: str) -> list:
    """The repository's files (paths relative to `root`, "/"-separated, sorted) without the answers, git's
    history, run outputs, caches and what .gitignore ignores."""
    rules, out = ignore_rules(root), []
    for folder, folders, files in os.walk(root):
        here = os.path.relpath(folder, root).replace(os.sep, "/")
        here = "" if here == "." else here + "/"
        folders[:] = sorted(d for d in folders if not ignored(here + d, True, rules)
                            and not os.path.islink(os.path.join(folder, d)))
        out += [here + f for f in files if not ignored(here + f, False, rules)]
    return sorted(out)


# ----------------------------------------------------------------------------------------------------
# The skeletons: the student.py files as handed out
# ----------------------------------------------------------------------------------------------------


def assignments(root: str) -> list:
    """The assignments' folders (01_dual_kl, ...): those with a grader."""
    folder = os.path.join(root, "assignments")
    return sorted(d for d in os.listdir(folder) if os.path.isfile(os.path.join(folder, d, "test_grader.py")))


def _is_stub(fn) -> bool:
    """A function whose body is its docstring, maybe `super().__init__()`, then `raise NotImplementedError`."""
    body = list(fn.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]                             # the docstring
    if body and ast.unparse(body[0]) == "super().__init__()":
        body = body[1:]
    return len(body) == 1 and isinstance(body[0], ast.Raise) and body[0].exc is not None and \
        ast.unparse(body[0].exc) in ("NotImplementedError", "NotImplementedError()")


def is_skeleton(source: str) -> bool:
    """Whether `source` is an untouched skeleton: a docstring, imports, and functions and classes (their
    methods) that all raise NotImplementedError, at least one of them. A student's first filled-in line, or a
    helper function of their own, makes it not one."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return False
    stubs = 0
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)) or (
                isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)):
            continue
        methods = node.body if isinstance(node, ast.ClassDef) else [node]
        for m in methods:
            if isinstance(m, ast.Expr) and isinstance(m.value, ast.Constant) and m is not node:
                continue                            # a class's docstring
            if not isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef)) or not _is_stub(m):
                return False
            stubs += 1
    return stubs > 0


def _from_git_head(root: str, relative: str):
    """The file's text in git HEAD, or None (no git, not a repository whose top is `root`, not committed)."""
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=root, capture_output=True, text=True)
        if top.returncode or os.path.realpath(top.stdout.strip()) != os.path.realpath(root):
            return None
        out = subprocess.run(["git", "show", f"HEAD:{relative}"], cwd=root, capture_output=True, text=True)
    except OSError:
        return None
    return out.stdout if out.returncode == 0 else None


def pristine_skeleton(root: str, assignment: str) -> tuple:
    """(the skeleton's text, where it came from: "student.py" or "git HEAD"), or (None, why there is none).
    The working copy's student.py when it is still a skeleton (so a teacher's edit of the handout's skeleton
    counts), else git HEAD's."""
    relative = f"assignments/{assignment}/student.py"
    try:
        source = open(os.path.join(root, relative), encoding="utf-8").read()
    except OSError as e:
        return None, f"{relative} cannot be read ({e.strerror})"
    if is_skeleton(source):
        return source, "student.py"
    committed = _from_git_head(root, relative)
    if committed is not None and is_skeleton(committed):
        return committed, "git HEAD"
    head = "git HEAD holds no skeleton of it" if committed is not None else "there is no git HEAD to take it from"
    return None, (f"{relative} has been filled in (not every function raises NotImplementedError) and {head}: "
                  f"restore the skeleton (e.g. `git checkout -- {relative}`, or from the repository you cloned)")


# ----------------------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------------------


def write_handout(out_dir: str, root: str = ROOT) -> dict:
    """Copy the repository's files to out_dir, the skeletons as student.py. Returns {"files": how many,
    "skeletons": {assignment: where each came from}}; raises ValueError (nothing written) when a skeleton
    cannot be found."""
    skeletons, missing = {}, []
    for a in assignments(root):
        source, where = pristine_skeleton(root, a)
        if source is None:
            missing.append(where)
        skeletons[a] = (source, where)
    if missing:
        raise ValueError("\n".join(missing))
    files = files_to_copy(root)
    for relative in files:
        target = os.path.join(out_dir, *relative.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(os.path.join(root, *relative.split("/")), target)
    for a, (source, _) in skeletons.items():
        with open(os.path.join(out_dir, "assignments", a, "student.py"), "w", encoding="utf-8") as f:
            f.write(source)
    return {"files": len(files), "skeletons": {a: where for a, (_, where) in skeletons.items()}}


def main(argv=None):
    parser = argparse.ArgumentParser(description="Write the students' copy of the repository: without "
                                     "assignments/solutions/, .git, runs/, caches and what .gitignore "
                                     "ignores; every student.py the skeleton.")
    parser.add_argument("out_dir", help="where to write it: a new or empty folder outside the repository")
    args = parser.parse_args(argv)
    out = os.path.realpath(args.out_dir)
    if out == os.path.realpath(ROOT) or out.startswith(os.path.realpath(ROOT) + os.sep):
        parser.error(f"{args.out_dir} is inside the repository: write the copy outside it")
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        parser.error(f"{args.out_dir} exists and is not an empty folder")
    try:
        done = write_handout(out)
    except ValueError as e:
        parser.error(f"no skeleton to hand out:\n{e}")
    from_git = [a for a, where in done["skeletons"].items() if where == "git HEAD"]
    print(f"wrote {done['files']} files to {args.out_dir}: the repository without {SOLUTIONS}/, .git, runs/, "
          f"caches and what .gitignore ignores")
    if from_git:
        print(f"student.py of {', '.join(from_git)}: the skeleton from git HEAD (yours is filled in)")
    print(f"check it: cd {args.out_dir} && pytest -q tests/test_assignments.py   (the whole suite: pytest -q)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
