"""Reference solution of assignment 5 (metrics.iw_nll and metrics.fit_gaussian_proposal)."""
import metrics


def iw_nll(log_joint, log_proposal):
    return metrics.iw_nll(log_joint, log_proposal)


def negative_elbo(log_joint, log_proposal):
    return -(log_joint.double() - log_proposal.double()).mean(-1)


def fit_gaussian(samples):
    r = metrics.fit_gaussian_proposal(samples, jitter=0.0)
    return r.loc, r.covariance_matrix
