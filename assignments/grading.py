"""Shared by the autograders: load the file being graded and turn "not implemented yet" into a clear message.

A grader grades `student.py` next to it, or the file named by the environment variable STUDENT_FILE
(the instructor's solutions and the test suite use that).
"""
import importlib.util
import os

import pytest


def load_student(grader_file: str):
    path = os.environ.get("STUDENT_FILE") or os.path.join(os.path.dirname(grader_file), "student.py")
    if not os.path.isfile(path):
        pytest.fail(f"no file to grade at {path}")
    spec = importlib.util.spec_from_file_location(f"graded_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def call(module, name: str, *args, **kwargs):
    """module.name(*args, **kwargs), failing the check with a readable message if it is missing or a stub."""
    fn = getattr(module, name, None)
    if fn is None:
        pytest.fail(f"`{name}` is missing from the graded file", pytrace=False)
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        pass                                             # fail outside the handler: no chained traceback
    pytest.fail(f"`{name}` is not implemented yet (it raises NotImplementedError): fill it in", pytrace=False)
