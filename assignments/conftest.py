"""Every autograder check runs under a time limit (grading.TIME_LIMIT_S, 10 s unless GRADING_TIME_LIMIT
says otherwise): its setup (loading the graded file) and its run each get that long. Both also run under
grading's reading guard: a check in which the graded code opens the repository's source or the solutions
fails, even where the grader calls the student's code directly (a method, a returned object)."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grading  # noqa: E402


# old-style hook wrappers (pytest >= 7, requirements.txt): the check's exception, a CheckTimeout included,
# reaches pytest through the wrapped call; the wrapper arms and disarms the alarm and the reading guard, and
# turns an answer read that no failure reported yet into the check's failure


def _graded_file(item) -> str:
    """The file this check grades: the value of the `student` fixture's parameter (grading.student_fixture)."""
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("student", "") if callspec else ""


def _guarded(item, what: str):
    path = _graded_file(item)
    with grading.time_limit(grading.TIME_LIMIT_S, what), grading.reading_guard(path):
        outcome = yield
        message = grading.unreported_reading(path)
    if message:
        exc = pytest.fail.Exception(message, pytrace=False)
        if hasattr(outcome, "force_exception"):          # pluggy >= 1.1
            outcome.force_exception(exc)
        else:
            raise exc


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    yield from _guarded(item, f"setting up {item.name}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    yield from _guarded(item, item.name)
