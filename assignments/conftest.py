"""Every autograder check runs under a time limit (grading.TIME_LIMIT_S, 10 s unless GRADING_TIME_LIMIT
says otherwise): its setup (loading the graded file) and its run each get that long."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grading  # noqa: E402


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    with grading.time_limit(grading.TIME_LIMIT_S, f"setting up {item.name}"):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    with grading.time_limit(grading.TIME_LIMIT_S, item.name):
        return (yield)
