"""Autograder of assignment 1. Run: pytest assignments/01_dual_kl"""
import math
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from grading import call, student_fixture  # noqa: E402

D = torch.distributions


student = student_fixture(__file__)              # student.py, or the file(s) in STUDENT_FILE


def gaussians():
    q = D.Independent(D.Normal(torch.tensor([1.5, -1.0]), torch.tensor([0.4, 0.7])), 1)
    p = D.Independent(D.Normal(torch.zeros(2), torch.ones(2)), 1)
    return q, p, float(D.kl_divergence(q, p))


def test_estimate_of_constant_critics(student):
    # nu = c everywhere: c - exp(c) + 1 (0 at c = 0, negative elsewhere)
    for c in (0.0, 1.0, -2.0):
        got = float(call(student, "dual_kl_estimate", torch.full((10,), c), torch.full((7,), c)))
        assert got == pytest.approx(c - math.exp(c) + 1, abs=1e-6), f"nu = {c} everywhere should give c - e^c + 1"


def test_estimate_at_the_optimal_critic_is_the_kl(student):
    # nu* = log q/p: the estimate equals KL(q || p) (the "+1" matters: without it you get KL - 1)
    torch.manual_seed(0)
    q, p, kl = gaussians()
    zq, zp = q.sample((200_000,)), p.sample((200_000,))
    got = float(call(student, "dual_kl_estimate", q.log_prob(zq) - p.log_prob(zq), q.log_prob(zp) - p.log_prob(zp)))
    assert got == pytest.approx(kl, abs=0.05), f"with the optimal critic the estimate must be KL = {kl:.3f}"


def test_critic_loss_pushes_the_estimate_up(student):
    nu_q = torch.zeros(8, requires_grad=True)
    nu_p = torch.zeros(8, requires_grad=True)
    call(student, "critic_loss", nu_q, nu_p).backward()
    # d(estimate)/d nu_q = +1/S, d(estimate)/d nu_p = -exp(nu_p)/S: the loss is the negative
    assert torch.allclose(nu_q.grad, torch.full((8,), -1 / 8)), "minimising the loss must raise nu on q's samples"
    assert torch.allclose(nu_p.grad, torch.full((8,), 1 / 8)), "and lower exp(nu) on p's samples"


def test_trained_critic_within_ten_percent(student):
    torch.manual_seed(0)
    q, p, kl = gaussians()
    critic = torch.nn.Sequential(torch.nn.Linear(2, 64), torch.nn.LeakyReLU(), torch.nn.Linear(64, 64),
                                 torch.nn.LeakyReLU(), torch.nn.Linear(64, 1))
    critic = call(student, "train_critic", lambda n: q.sample((n,)), lambda n: p.sample((n,)), critic)
    with torch.no_grad():
        est = float(call(student, "dual_kl_estimate", critic(q.sample((100_000,))).squeeze(-1),
                         critic(p.sample((100_000,))).squeeze(-1)))
    assert abs(est - kl) < 0.1 * kl, f"the trained critic estimates {est:.3f}, the true KL is {kl:.3f}"
