"""Reference solution of assignment 1 (uses metrics.dual_kl, the repository's own implementation)."""
import torch

import metrics


def dual_kl_estimate(nu_q, nu_p):
    return metrics.dual_kl(nu_q, nu_p)                  # E_q nu - E_p exp(nu) + 1, exp in float64


def critic_loss(nu_q, nu_p):
    return -metrics.dual_kl(nu_q, nu_p)                 # maximise the estimate = minimise its negative


def train_critic(sample_q, sample_p, critic, steps=400, batch=512, lr=3e-3):
    opt = torch.optim.Adam(critic.parameters(), lr=lr)
    for _ in range(steps):
        loss = critic_loss(critic(sample_q(batch)).squeeze(-1), critic(sample_p(batch)).squeeze(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return critic
