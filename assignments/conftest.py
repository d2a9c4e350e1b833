"""Every autograder check runs under a time limit (grading.TIME_LIMIT_S, 10 s unless GRADING_TIME_LIMIT
says otherwise): its setup (loading the graded file) and its run each get that long."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grading  # noqa: E402


# old-style hook wrappers (pytest >= 7, requirements.txt): the check's exception, a CheckTimeout included,
# reaches pytest through the wrapped call; the wrapper only arms and disarms the alarm


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    with grading.time_limit(grading.TIME_LIMIT_S, f"setting up {item.name}"):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    with grading.time_limit(grading.TIME_LIMIT_S, item.name):
        yield
