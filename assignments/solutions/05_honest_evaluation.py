"""Reference solution of assignment 5: the importance-weighted bound (Burda et al. 2016), the ELBO on the
same samples, and a Gaussian fitted to posterior samples. Written out in full, without the repository's code."""
import math

import torch


def iw_nll(log_joint, log_proposal):
    # log w_k = log p(x, z_k) - log r(z_k | x);  -log (1/K) sum_k w_k, as a logsumexp in float64
    log_w = log_joint.double() - log_proposal.double()                  # (B, K)
    return -(torch.logsumexp(log_w, dim=-1) - math.log(log_w.shape[-1]))


def negative_elbo(log_joint, log_proposal):
    # -(1/K) sum_k log w_k: the mean of the logs, below the log of the mean (Jensen), so a looser bound
    return -(log_joint.double() - log_proposal.double()).mean(-1)


def fit_gaussian(samples):
    samples = samples.double()                                          # (B, S, Z)
    mean = samples.mean(1)                                              # (B, Z)
    centred = samples - mean.unsqueeze(1)                               # (B, S, Z)
    cov = centred.transpose(1, 2) @ centred / samples.shape[1]          # (B, Z, Z), biased: divide by S
    return mean, cov
