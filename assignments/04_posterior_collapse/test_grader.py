"""Autograder of assignment 4. Run: pytest assignments/04_posterior_collapse"""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from grading import call, student_fixture  # noqa: E402


student = student_fixture(__file__)              # student.py, or the file(s) in STUDENT_FILE


def test_monotonic_schedule(student):
    got = [call(student, "monotonic_beta", s, 20) for s in (0, 5, 10, 20, 35)]
    assert got == pytest.approx([0.1, 0.325, 0.55, 1.0, 1.0]), f"0.1 -> 1 over 20 steps, then 1; got {got}"
    capped = [call(student, "monotonic_beta", s, 20, 0.1, 0.5) for s in (0, 5, 10, 20)]
    assert capped == pytest.approx([0.1, 0.325, 0.5, 0.5]), f"beta_max = 0.5 caps the schedule; got {capped}"


def test_cyclical_schedule(student):
    got = [call(student, "cyclical_beta", s, 100) for s in (0, 5, 10, 12, 13, 24, 25, 30, 99)]
    assert got == pytest.approx([0, 0.4, 0.8, 0.96, 1, 1, 0, 0.4, 1]), f"4 cycles of 25, rising over 12.5; got {got}"
    assert call(student, "cyclical_beta", 30, 100, 4, 0.5, 0.5) == pytest.approx(0.2)


def test_reads_the_log(student, tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("step,epoch,split,rec,kl,au\n100,1.0,valid,90.5,3.25,12\n200,2.0,valid,88.0,0.04,0\n"
                    "200,,test,87.0,0.05,0\n")
    steps, kl, au = call(student, "kl_and_au", str(path))
    assert list(steps) == [100, 200] and list(au) == [12, 0], "only the validation rows, in order"
    assert list(kl) == pytest.approx([3.25, 0.04])
