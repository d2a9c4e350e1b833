"""The classroom kit's autograders can pass and can fail: each grader runs (in a fresh pytest process, as a
student would run it) against the reference solution (every check passes), the untouched skeleton (every
check fails, with a 'not implemented' message), and deliberately broken copies of the solution (rejected)."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (assignment, [(description, text in the solution, replacement)]): each replacement must apply.
BROKEN = {
    "01_dual_kl": [
        ("missing +1", "return metrics.dual_kl(nu_q, nu_p)                  #",
         "return metrics.dual_kl(nu_q, nu_p) - 1.0            #"),
        ("sign error in the critic's loss", "return -metrics.dual_kl(nu_q, nu_p)                 #",
         "return metrics.dual_kl(nu_q, nu_p)                  #"),
    ],
    "02_implicit_posteriors": [
        ("transposed covariance", "return w_eps @ w_eps.T", "return w_eps.T @ w_eps"),
        ("variance over the wrong dimension", "return metrics.active_units(means, threshold)",
         "return metrics.active_units(means.T, threshold)"),
    ],
    "03_ivae_to_ivae_mi": [
        ("h not detached", "return nu_xz(z, h.detach()).mean()", "return nu_xz(z, h).mean()"),
        ("iVAE_MI with the wrong critic", "return nu_z(z).mean()                           #",
         "return nu_xz(z, h).mean()                       #"),
        ("sum instead of mean", "return nu_z(z).mean()                           #",
         "return nu_z(z).sum()                            #"),
    ],
    "04_posterior_collapse": [
        ("beta not capped", "cfg = vae.Config(anneal=\"monotonic\", beta=beta_max,",
         "cfg = vae.Config(anneal=\"monotonic\", beta=1.0,"),
        ("ratio ignored in the cycle", "cfg = vae.Config(anneal=\"cyclical\", beta=beta_max, cycles=cycles, ratio=ratio)",
         "cfg = vae.Config(anneal=\"cyclical\", beta=beta_max, cycles=cycles, ratio=1.0)"),
    ],
    "05_honest_evaluation": [
        ("mean of the log weights instead of log-mean-exp",
         "return metrics.iw_nll(log_joint, log_proposal)",
         "return -(log_joint - log_proposal).double().mean(-1)"),
        ("missing -log K", "return metrics.iw_nll(log_joint, log_proposal)",
         "return metrics.iw_nll(log_joint, log_proposal) - __import__('math').log(log_joint.shape[-1])"),
        ("unbiased covariance", "r = metrics.fit_gaussian_proposal(samples, jitter=0.0)\n    return r.loc, r.covariance_matrix",
         "r = metrics.fit_gaussian_proposal(samples, jitter=0.0)\n    S = samples.shape[1]\n"
         "    return r.loc, r.covariance_matrix * S / (S - 1) + 1e-3"),
    ],
}


def grade(assignment: str, student_file: str):
    env = {**os.environ, "STUDENT_FILE": student_file}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"assignments/{assignment}"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    return out.returncode, out.stdout + out.stderr


@pytest.mark.parametrize("assignment", sorted(BROKEN))
def test_grader_passes_the_solution_and_fails_the_skeleton(assignment):
    code, log = grade(assignment, os.path.join(ROOT, "assignments", "solutions", f"{assignment}.py"))
    assert code == 0, log
    code, log = grade(assignment, os.path.join(ROOT, "assignments", assignment, "student.py"))
    assert code == 1 and " passed" not in log.splitlines()[-1], log
    assert "not implemented yet" in log


@pytest.mark.parametrize("assignment, broken", [(a, b) for a, bs in sorted(BROKEN.items()) for b in bs],
                         ids=lambda v: v if isinstance(v, str) else v[0].replace(" ", "_"))
def test_grader_rejects_a_broken_solution(assignment, broken, tmp_path):
    _, old, new = broken
    source = open(os.path.join(ROOT, "assignments", "solutions", f"{assignment}.py")).read()
    assert old in source, f"the broken variant no longer applies to the solution: {old!r}"
    path = tmp_path / f"{assignment}_broken.py"
    path.write_text(source.replace(old, new))
    code, log = grade(assignment, str(path))
    assert code == 1 and "failed" in log.splitlines()[-1], log
