"""Broken and cheating copies of the reference solutions, which every autograder must reject
(tests/test_assignments.py grades them all). They live beside the solutions because they quote them: a
student's copy (assignments/handout.py) has neither, and its tests of the graders skip.

Each copy is the solution with one edit (old -> new, each must apply) and maybe a header line: short of the
mistake or the cheat it adds, it is the solution, so a grader (or a guard of grading.py) that stops catching
it lets it pass and the test fails."""
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODULES = sorted(f for f in os.listdir(ROOT) if f.endswith(".py"))      # metrics.py, ivae.py, ...

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

# (assignment, description, the answer file the message must name, edit (old, new) or None, header, the checks
# that must fail or None for all): a file that reads the repository's source or a solution while it loads or
# runs, by any route. Each must fail with "reads <file>".
READS_THE_ANSWER = [
    ("01_dual_kl", "exec(open('metrics.py').read()) at the top", "metrics.py", None,
     "exec(open('metrics.py').read())\n", None),
    ("01_dual_kl", "the same, the error caught", "metrics.py", None,
     "try:\n    exec(open('metrics.py').read())\nexcept Exception:\n    pass\n", None),
    ("01_dual_kl", "a returned critic that reads metrics.py when the grader calls it, the error caught",
     "metrics.py", ("    return critic", "    return _Peek(critic)"),
     "import torch\n\n\nclass _Peek(torch.nn.Module):\n"
     "    def __init__(self, inner):\n        super().__init__()\n        self.inner = inner\n\n"
     "    def forward(self, z):\n        try:\n            open('metrics.py').close()\n"
     "        except OSError:\n            pass\n        return self.inner(z)\n",
     ("test_trained_critic_within_ten_percent",)),
    ("02_implicit_posteriors", "open() of the solution at the top",
     "assignments/solutions/02_implicit_posteriors.py", None,
     "_answer = open('assignments/solutions/02_implicit_posteriors.py').read()\n", None),
    ("03_ivae_to_ivae_mi", "pathlib read_text in the function", "metrics.py",
     ("    return kl_cond - kl_agg", "    pathlib.Path('metrics.py').read_text()\n    return kl_cond - kl_agg"),
     "import pathlib\n", ("test_mutual_info_identity",)),
    ("03_ivae_to_ivae_mi", "an import the source check cannot see", "metrics.py",
     ("    if objective == ", "    importlib.import_module('met' + 'rics')\n    if objective == "),
     "import importlib\n",
     ("test_ivae_regulariser_uses_nu_xz_with_h_detached", "test_ivae_mi_regulariser_uses_nu_z")),
    ("04_posterior_collapse", "io.open in the function", "vae.py",
     ("    if warmup_steps <= 0:", "    io.open('vae.py').read()\n    if warmup_steps <= 0:"),
     "import io\n", ("test_monotonic_schedule",)),
    ("04_posterior_collapse", "open() of the solution beside the log it reads",
     "assignments/solutions/04_posterior_collapse.py",
     ("    with open(log_csv,",
      "    open('assignments/solutions/04_posterior_collapse.py').close()\n    with open(log_csv,"),
     "", ("test_reads_the_log",)),
    ("05_honest_evaluation", "importlib.util.spec_from_file_location('helpers', 'metrics.py')", "metrics.py",
     ("    log_w = log_joint", "    return helpers.iw_nll(log_joint, log_proposal)\n    log_w = log_joint"),
     "import importlib.util\n_spec = importlib.util.spec_from_file_location('helpers', 'metrics.py')\n"
     "helpers = importlib.util.module_from_spec(_spec)\n_spec.loader.exec_module(helpers)\n", None),
    ("05_honest_evaluation", "a symlink to metrics.py", "metrics.py",
     ("def fit_gaussian(samples):\n",
      "def fit_gaussian(samples):\n    _link = os.path.join(os.path.dirname(__file__), 'link_to_metrics.py')\n"
      "    if not os.path.lexists(_link):\n        os.symlink(os.path.abspath('metrics.py'), _link)\n"
      "    open(_link).read()\n"),
     "import os\n", ("test_fit_gaussian",)),
    ("06_critic_vs_exact_kl", "exec(compile(open('metrics.py').read(), ...))", "metrics.py", None,
     "exec(compile(open('metrics.py').read(), 'metrics.py', 'exec'))\n", None),
    ("06_critic_vs_exact_kl", "os.open and os.read in the function", "ivae.py",
     ("def dual_estimate(nu_q, nu_p):\n",
      "def dual_estimate(nu_q, nu_p):\n    os.read(os.open('ivae.py', os.O_RDONLY), 100)\n"),
     "import os\n", ("test_dual_estimate",)),
] + [
    ("04_posterior_collapse", f"open('{m}') in the function", m,
     ("    if warmup_steps <= 0:", f"    open('{m}').read()\n    if warmup_steps <= 0:"), "",
     ("test_monotonic_schedule",))
    for m in MODULES                                         # every one of the repository's modules
]
