"""Reference solution of assignment 1: the Fenchel-dual KL estimate, its loss, and a critic trainer.

Written out in full (no import of the repository's metrics.py), as a student would write it.
"""
import torch


def dual_kl_estimate(nu_q, nu_p):
    # Eq. (7) with the "+1" (Nguyen et al. 2010): KL(q||p) >= E_q[nu] - E_p[exp(nu)] + 1, equal at nu = log q/p.
    # exp in float64: nu of a few tens stays finite and exact there, and low-precision inputs are safe.
    e_q = nu_q.double().mean()                          # Monte-Carlo E_q[nu] over the S samples of q
    e_p = nu_p.double().exp().mean()                    # Monte-Carlo E_p[exp(nu)] over the S' samples of p
    return e_q - e_p + 1.0


def critic_loss(nu_q, nu_p):
    # Eq. (9): the critic *maximises* the estimate, so an optimiser minimises its negative
    return -dual_kl_estimate(nu_q, nu_p)


def train_critic(sample_q, sample_p, critic, steps=400, batch=512, lr=3e-3):
    opt = torch.optim.Adam(critic.parameters(), lr=lr)
    for _ in range(steps):
        z_q, z_p = sample_q(batch), sample_p(batch)     # fresh samples every step: (batch, Z) each
        loss = critic_loss(critic(z_q).squeeze(-1), critic(z_p).squeeze(-1))    # critic: (batch, Z) -> (batch, 1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return critic
