"""Autograder of assignment 5. Run: pytest assignments/05_honest_evaluation"""
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from grading import call, student_fixture  # noqa: E402

D = torch.distributions
S2 = 0.5                                                 # p(z) = N(0, 1), p(x|z) = N(z, S2)


student = student_fixture(__file__)              # student.py, or the file(s) in STUDENT_FILE


def setup():
    x = torch.tensor([-1.5, 0.3, 2.0], dtype=torch.float64).unsqueeze(1)       # (B, 1)
    true_nll = -D.Normal(0.0, math.sqrt(1 + S2)).log_prob(x.squeeze(1))       # p(x) = N(0, 1 + S2)
    prior = D.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0)
    log_joint = lambda z: D.Normal(z, math.sqrt(S2)).log_prob(x) + prior.log_prob(z)   # noqa: E731
    return x, true_nll, log_joint


def test_exact_with_the_true_posterior(student):
    torch.manual_seed(0)
    x, true_nll, log_joint = setup()
    post = D.Normal(x / (1 + S2), math.sqrt(S2 / (1 + S2)))                   # exact p(z|x)
    z = post.sample((20,)).squeeze(-1).T                                       # (B, K)
    got = call(student, "iw_nll", log_joint(z), post.log_prob(z.T.unsqueeze(-1)).squeeze(-1).T)
    torch.testing.assert_close(torch.as_tensor(got).double(), true_nll, msg="with r = p(z|x) every weight is "
                               "p(x): the bound must be exact (check the 1/K inside the log)")


def test_tighter_than_the_elbo_and_still_a_bound(student):
    torch.manual_seed(0)
    x, true_nll, log_joint = setup()
    r = D.Normal(torch.zeros(3, 1, dtype=torch.float64), 1.5)                  # a poor proposal
    z = r.sample((2000,)).squeeze(-1).T                                        # (B, K)
    lj, lr = log_joint(z), r.log_prob(z.T.unsqueeze(-1)).squeeze(-1).T
    iw = torch.as_tensor(call(student, "iw_nll", lj, lr)).double()
    elbo = torch.as_tensor(call(student, "negative_elbo", lj, lr)).double()
    assert torch.all(iw < elbo - 0.05), "log-mean-exp of the weights beats the mean of their logs (Jensen)"
    assert torch.all(iw > true_nll - 0.05), "and it stays an upper bound on -log p(x)"
    one = torch.as_tensor(call(student, "iw_nll", lj[:, :1], lr[:, :1])).double()
    torch.testing.assert_close(one, torch.as_tensor(call(student, "negative_elbo", lj[:, :1], lr[:, :1])).double(),
                               msg="with K = 1 the IW bound is the ELBO")


def test_fit_gaussian(student):
    torch.manual_seed(0)
    cov = torch.tensor([[2.0, 0.6], [0.6, 0.5]], dtype=torch.float64)
    samples = D.MultivariateNormal(torch.tensor([1.0, -2.0], dtype=torch.float64), cov).sample((2, 50_000)).double()
    mean, c = call(student, "fit_gaussian", samples)
    torch.testing.assert_close(torch.as_tensor(mean).double(), samples.mean(1))
    centred = samples - samples.mean(1, keepdim=True)
    torch.testing.assert_close(torch.as_tensor(c).double(), centred.transpose(1, 2) @ centred / 50_000)
