"""Autograder of assignment 3. Run: pytest assignments/03_ivae_to_ivae_mi"""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from grading import call, student_fixture  # noqa: E402


student = student_fixture(__file__)              # student.py, or the file(s) in STUDENT_FILE


class CriticXZ(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.3))

    def forward(self, z, h):
        return self.w * (z * h).sum(-1)


class CriticZ(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(-0.2))

    def forward(self, z):
        return self.w * z.pow(2).sum(-1)


def inputs():
    torch.manual_seed(0)
    return torch.randn(6, 3, requires_grad=True), torch.randn(6, 3, requires_grad=True)


def test_ivae_regulariser_uses_nu_xz_with_h_detached(student):
    nu_xz, nu_z = CriticXZ(), CriticZ()
    z, h = inputs()
    reg = call(student, "regulariser", nu_xz, nu_z, z, h, "ivae")
    assert float(reg.detach()) == pytest.approx(float(nu_xz(z, h).mean().detach())), "iVAE's regulariser is the mean of nu(x, z)"
    reg.backward()
    assert z.grad is not None and z.grad.abs().sum() > 0, "the encoder must get a gradient through z"
    assert h.grad is None or h.grad.abs().sum() == 0, "h must enter nu(x, z) detached (why? see the handout)"


def test_ivae_mi_regulariser_uses_nu_z(student):
    nu_xz, nu_z = CriticXZ(), CriticZ()
    z, h = inputs()
    reg = call(student, "regulariser", nu_xz, nu_z, z, h, "ivae_mi")
    assert float(reg.detach()) == pytest.approx(float(nu_z(z).mean().detach())), "iVAE_MI's regulariser is the mean of nu(z)"
    reg.backward()
    assert nu_xz.w.grad is None or nu_xz.w.grad == 0, "nu(x, z) plays no part in iVAE_MI's objective"


def test_critic_loss_trains_both_critics_only(student):
    nu_xz, nu_z = CriticXZ(), CriticZ()
    z, h = inputs()
    loss = call(student, "critic_loss", nu_xz, nu_z, z, h, torch.randn(6, 3))
    loss.backward()
    assert nu_xz.w.grad is not None and nu_z.w.grad is not None, "both critics must be trained"
    assert z.grad is None and h.grad is None, "the critics' loss must not move the encoder"
    # with nu = 0 everywhere each estimate is 0 - 1 + 1 = 0
    zero_xz, zero_z = CriticXZ(), CriticZ()
    with torch.no_grad():
        zero_xz.w.zero_()
        zero_z.w.zero_()
    zero = call(student, "critic_loss", zero_xz, zero_z, z, h, torch.randn(6, 3))
    assert float(torch.as_tensor(zero).detach()) == pytest.approx(0.0), "with nu = 0 both estimates are 0 - 1 + 1 = 0"


def test_mutual_info_identity(student):
    assert float(call(student, "mutual_info", 12.5, 0.3)) == pytest.approx(12.2)
