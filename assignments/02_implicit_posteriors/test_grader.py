"""Autograder of assignment 2. Run: pytest assignments/02_implicit_posteriors"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from grading import call, student_fixture  # noqa: E402


student = student_fixture(__file__)              # student.py, or the file(s) in STUDENT_FILE


def test_generator_shapes_and_depth(student):
    torch.manual_seed(0)
    for layers, n_linear in ((0, 1), (2, 3)):
        g = call(student, "Generator", 6, 4, 3, layers, 16)
        z = call(g, "forward", torch.randn(5, 6), 7)
        assert z.shape == (5, 7, 3), f"G(h, eps) with h (5, 6) and 7 samples must be (5, 7, 3), got {tuple(z.shape)}"
        linears = [m for m in g.modules() if isinstance(m, torch.nn.Linear)]
        assert len(linears) == n_linear, f"layers = {layers} needs {n_linear} Linear layer(s), found {len(linears)}"
    z = call(g, "forward", torch.zeros(1, 6), 2)
    assert not torch.allclose(z[0, 0], z[0, 1]), "each sample needs its own noise"


def test_affine_map_gives_the_stated_covariance(student):
    torch.manual_seed(0)
    linear = torch.nn.Linear(6 + 4, 3)                   # h: 6, eps: 4, z: 3
    h = torch.randn(1, 6).expand(200_000, 6)
    z = linear(torch.cat([h, torch.randn(200_000, 4)], -1)).detach()
    cov = call(student, "affine_covariance", linear, 4)
    assert tuple(cov.shape) == (3, 3), f"the covariance of z (3-d) is 3 x 3, got {tuple(cov.shape)}"
    torch.testing.assert_close(cov.detach(), torch.cov(z.T), atol=0.01, rtol=0.02)


def test_active_units(student):
    torch.manual_seed(0)
    means = torch.zeros(5000, 4)
    means[:, 0] = torch.randn(5000)
    means[:, 1] = 0.2 * torch.randn(5000)                # variance 0.04: active
    means[:, 2] = 0.05 * torch.randn(5000)               # variance 0.0025: not
    count, var = call(student, "active_units", means, 0.01)
    assert int(count) == 2, f"two dimensions vary across sentences with variance >= 0.01, got {count}"
    torch.testing.assert_close(torch.as_tensor(var).double(), means.double().var(0, unbiased=False),
                               rtol=1e-4, atol=1e-7)
