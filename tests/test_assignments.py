"""The classroom kit's autograders can pass and can fail. Each grader runs once per assignment, in a fresh
pytest process as a student would run it, on several files at once (STUDENT_FILE=a.py:b.py:...): the
reference solution (every check passes), the untouched skeleton (every check fails with a 'not implemented'
message), deliberately broken copies of the solution (rejected), and copies that import the answer from
the repository instead of implementing it (rejected, saying so). A check that runs past the time limit
fails."""
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (assignment, [(description, text in the solution, replacement)]): each replacement must apply.
BROKEN = {
    "01_dual_kl": [
        ("missing +1", "return e_q - e_p + 1.0", "return e_q - e_p"),
        ("sign error in the critic's loss", "return -dual_kl_estimate(nu_q, nu_p)", "return dual_kl_estimate(nu_q, nu_p)"),
    ],
    "02_implicit_posteriors": [
        ("transposed covariance", "return w_eps @ w_eps.T", "return w_eps.T @ w_eps"),
        ("variance over the wrong dimension", "var = (means - means.mean(0)).pow(2).mean(0)",
         "var = (means.T - means.T.mean(0)).pow(2).mean(0)"),
        ("one noise draw shared by all samples", "eps = torch.randn(B, n_samples, self.noise_dim, device=h.device)",
         "eps = torch.randn(B, 1, self.noise_dim, device=h.device).expand(B, n_samples, self.noise_dim)"),
    ],
    "03_ivae_to_ivae_mi": [
        ("h not detached", "return nu_xz(z, h.detach()).mean()", "return nu_xz(z, h).mean()"),
        ("iVAE_MI with the wrong critic", "return nu_z(z).mean()                           #",
         "return nu_xz(z, h).mean()                       #"),
        ("sum instead of mean", "return nu_z(z).mean()                           #",
         "return nu_z(z).sum()                            #"),
        ("critics' loss reaches the encoder", "    z, h = z.detach(), h.detach()", "    pass"),
        ("MI with the wrong sign", "return kl_cond - kl_agg", "return kl_agg - kl_cond"),
    ],
    "04_posterior_collapse": [
        ("beta not capped", "return min(beta_max, beta_start", "return min(1.0, beta_start"),
        ("ratio ignored in the cycle", "return beta_max * min(1.0, tau / ratio)", "return beta_max * min(1.0, tau)"),
        ("test rows read too", 'if r["split"] == "valid"]', ']'),
    ],
    "05_honest_evaluation": [
        ("mean of the log weights instead of log-mean-exp",
         "return -(torch.logsumexp(log_w, dim=-1) - math.log(log_w.shape[-1]))", "return -log_w.mean(-1)"),
        ("missing -log K", "return -(torch.logsumexp(log_w, dim=-1) - math.log(log_w.shape[-1]))",
         "return -torch.logsumexp(log_w, dim=-1)"),
        ("unbiased covariance", "/ samples.shape[1]", "/ (samples.shape[1] - 1)"),
    ],
    "06_critic_vs_exact_kl": [
        ("|m|^2 left out of the exact KL", "0.5 * (trace + mean.pow(2).sum(-1) - Z - log_det)",
         "0.5 * (trace + 0 * mean.sum(-1) - Z - log_det)"),
        ("float32 covariance", "    trace = s.pow(2).sum()\n    log_det = 2.0 * s.log().sum()",
         "    cov = W.float() @ W.float().T\n    trace = torch.trace(cov).double()\n    log_det = torch.logdet(cov).double()"),
        ("missing +1", "return nu_q.double().mean() - nu_p.double().exp().mean() + 1.0",
         "return nu_q.double().mean() - nu_p.double().exp().mean()"),
        ("one update per step", "for _ in range(updates):", "for _ in range(1):"),
        ("no determinant in the ideal critic", "log_q = -0.5 * white.pow(2).sum(-1) - S.log().sum()",
         "log_q = -0.5 * white.pow(2).sum(-1)"),
        ("the critic descends the estimate", "loss = -dual_estimate(critic(z_q)", "loss = dual_estimate(critic(z_q)"),
    ],
}

# (assignment, description, the graded function's new body or a line added at the top): a file that takes the
# answer from the repository. Each must be rejected with "imports <module>".
IMPORTS_THE_ANSWER = [
    ("01_dual_kl", "from metrics import dual_kl", "metrics",
     ("    e_q = nu_q.double().mean() ", "    return __import__('torch').as_tensor(dual_kl(nu_q, nu_p)).double()\n    e_q = nu_q.double().mean() "),
     "from metrics import dual_kl\n"),
    ("02_implicit_posteriors", "Generator from ivae", "ivae", None,
     "import ivae\nGenerator = ivae.ImplicitPosterior\n"),
    ("03_ivae_to_ivae_mi", "mutual_info from metrics, imported in the function", "metrics",
     ("    return kl_cond - kl_agg", "    import metrics\n    return metrics.mutual_info(kl_cond, kl_agg)"), ""),
    ("04_posterior_collapse", "beta_at from vae", "vae", None, "import vae\n"),
    ("05_honest_evaluation", "iw_nll through importlib", "metrics",
     ("    log_w = log_joint", "    return importlib.import_module('metrics').iw_nll(log_joint, log_proposal)\n    log_w = log_joint"),
     "import importlib\n"),
    ("06_critic_vs_exact_kl", "dual_estimate from metrics", "metrics",
     ("    return nu_q.double().mean() - nu_p", "    return metrics.dual_kl(nu_q, nu_p).double()\n    return nu_q.double().mean() - nu_p"),
     "import metrics\n"),
]


def solution(assignment: str) -> str:
    return open(os.path.join(ROOT, "assignments", "solutions", f"{assignment}.py")).read()


def run_grader(assignment: str, files: list, folder, env_extra: dict = None) -> dict:
    """Grade `files` with the assignment's grader in one pytest process (its report goes to `folder`):
    {"results": {file stem: {check: (outcome, message)}}, "log": its output}; outcome "passed", "failed" or
    "error" (the check's setup failed)."""
    report = os.path.join(str(folder), f"report_{assignment}.xml")
    # These tests check what the graders decide, not how fast this machine is: a CI machine busy with other
    # work must not fail a solution on the 10 s per-check limit (test_a_check_past_the_time_limit_fails
    # tests the limit itself, with its own value).
    env = {**os.environ, "GRADING_TIME_LIMIT": "120", "STUDENT_FILE": os.pathsep.join(files), **(env_extra or {})}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
                          f"assignments/{assignment}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    results = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        check, _, stem = case.get("name").partition("[")
        outcome, message = "passed", ""
        for tag in ("failure", "error"):
            node = case.find(tag)
            if node is not None:
                outcome, message = ("failed" if tag == "failure" else "error"), (node.get("message") or "") + (node.text or "")
        results.setdefault(stem.rstrip("]"), {})[check] = (outcome, message)
    return {"results": results, "log": out.stdout + out.stderr}


@pytest.fixture(scope="session")
def graded(tmp_path_factory):
    """graded(assignment) -> run_grader's answer for the solution, the skeleton, the broken copies and the
    copies that import the answer, run once per assignment and session."""
    cache = {}

    def get(assignment):
        if assignment not in cache:
            folder = tmp_path_factory.mktemp(assignment)
            files = [os.path.join(ROOT, "assignments", "solutions", f"{assignment}.py"),
                     os.path.join(ROOT, "assignments", assignment, "student.py")]
            for i, (_, old, new) in enumerate(BROKEN.get(assignment, [])):
                path = folder / f"broken{i}.py"
                path.write_text(solution(assignment).replace(old, new))
                files.append(str(path))
            for i, (a, _, _, edit, header) in enumerate(IMPORTS_THE_ANSWER):
                if a == assignment:
                    source = solution(assignment)
                    if edit:
                        source = source.replace(*edit)
                    path = folder / f"imports{i}.py"
                    path.write_text(header + source)
                    files.append(str(path))
            cache[assignment] = run_grader(assignment, files, folder)
        return cache[assignment]
    return get


@pytest.mark.parametrize("assignment", sorted(BROKEN))
def test_grader_passes_the_solution_and_fails_the_skeleton(assignment, graded):
    g = graded(assignment)
    checks = g["results"].get(assignment)
    assert checks and all(o == "passed" for o, _ in checks.values()), g["log"]
    skeleton = g["results"]["student"]
    assert set(skeleton) == set(checks), g["log"]
    assert all(o == "failed" for o, _ in skeleton.values()), g["log"]
    assert any("not implemented yet" in m for _, m in skeleton.values()), g["log"]


@pytest.mark.parametrize("assignment, i", [(a, i) for a, bs in sorted(BROKEN.items()) for i in range(len(bs))],
                         ids=[f"{a}-{b[0].replace(' ', '_')}" for a, bs in sorted(BROKEN.items()) for b in bs])
def test_grader_rejects_a_broken_solution(assignment, i, graded):
    _, old, _ = BROKEN[assignment][i]
    assert old in solution(assignment), f"the broken variant no longer applies to the solution: {old!r}"
    g = graded(assignment)
    checks = g["results"][f"broken{i}"]
    assert any(o == "failed" for o, _ in checks.values()), g["log"]


@pytest.mark.parametrize("i", range(len(IMPORTS_THE_ANSWER)), ids=[f"{c[0]}-{c[1].replace(' ', '_')}" for c in IMPORTS_THE_ANSWER])
def test_grader_rejects_a_file_that_imports_the_answer(i, graded):
    assignment, _, module, edit, _ = IMPORTS_THE_ANSWER[i]
    assert edit is None or edit[0] in solution(assignment), f"the edit no longer applies: {edit[0]!r}"
    g = graded(assignment)
    checks = g["results"][f"imports{i}"]
    assert all(o in ("failed", "error") for o, _ in checks.values()), g["log"]
    assert all(f"imports {module}" in m or f"imported {module}" in m for _, m in checks.values()), g["log"]


def test_a_check_past_the_time_limit_fails(tmp_path):
    source = solution("04_posterior_collapse")
    head = "def monotonic_beta(step, warmup_steps, beta_start=0.1, beta_max=1.0):\n"
    assert head in source
    path = tmp_path / "endless.py"
    path.write_text(source.replace(head, head + "    while True:\n        pass\n"))
    g = run_grader("04_posterior_collapse", [str(path)], tmp_path, {"GRADING_TIME_LIMIT": "1"})
    checks = g["results"]["endless"]
    assert checks["test_monotonic_schedule"][0] == "failed", g["log"]
    assert "ran longer than 1 s" in checks["test_monotonic_schedule"][1], g["log"]
    assert all(o == "passed" for c, (o, _) in checks.items() if c != "test_monotonic_schedule"), g["log"]
