"""Which residual-critic setting recovers the AC residual of the MLP iVAE's epoch-4 model, and at what cost?
The model FROZEN; the first 8 PTB test sentences; one seed. See README.md here.

    python results/ptb/ac_in_progress/critic_probe/probe.py CKPT [variant ...]

A variant: name:n:S:lr[:updates[:flags]] (n whitened in-sample samples per sentence of S that fit mu, L;
Adam lr; default 1,500 updates; flags joined by '+': 'fresh' = a new critic and Adam, 'cos' = lr
cosine-decayed to 0 as residual_check does), or 'check[:STEPS]' (metrics.residual_check as ivae.evaluate
calls it, with the run's resid_check_steps or STEPS updates). Training variants continue a COPY of the checkpoint's
joint critic nu_xz with the checkpoint's own Adam state (its nu_xz group), exactly as ivae.ac_train_step
does: per step one fit of S samples, then nu_steps = 5 Adam updates on the same whitened u with fresh
N(0, I) samples, the critic under the run's autocast (bf16). Readings (fp32, no autocast, as evaluate):
R64 = in-sample whitening at S = 64 (all 64 samples read, pooled over 32 draws; the regime the critic
trains in), R512 (evaluate's fit_samples), R1024 (residual_check's n_fit; 8 draws, as its eval_rounds)."""
import copy
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.getcwd())
import data      # noqa: E402
import ivae      # noqa: E402
import metrics   # noqa: E402

torch.set_num_threads(1)
CKPT = sys.argv[1]
VARIANTS = sys.argv[2:] or ["joint_n4_S64_lr1e-4:4:64:1e-4"]
UPDATES, READ_EVERY, SEED = 1500, 250, 0

ck = torch.load(CKPT, map_location="cpu", weights_only=False)
cfg = ivae.Config(**ck["config"])
vocab = data.Vocab.from_state_dict(ck["vocab"])
corpus = data.load_corpus("ptb", "data", ("test",), vocab=vocab, verbose=False)
device = torch.device("cpu")
model, nu_xz, nu_z, _, _ = ivae.build(cfg, len(vocab), device)
model.load_state_dict(ck["model"]); nu_xz.load_state_dict(ck["nu_xz"]); nu_z.load_state_dict(ck["nu_z"])
model.eval()
for p in model.parameters():
    p.requires_grad_(False)
batch = data.collate(corpus.examples["test"][:8]).to(device)
with torch.no_grad():
    h, _ = model(batch.tokens, batch.lengths)                            # (8, H)
hu = h.unsqueeze(1)                                                      # (8, 1, H)
print(f"checkpoint step {ck['step']}, {len(h)} sentences, lengths {batch.lengths.tolist()}", flush=True)


@torch.no_grad()
def read(critic, S, draws, gen):
    """The dual at `critic`, in-sample whitening at S, pooled over draws as residual_check pools: per sentence
    mean nu(u) - mean exp nu(u') + 1; returns (mean over sentences, max nu on N(0, I) samples)."""
    was = critic.training
    critic.eval()
    sq, se, mx = 0.0, 0.0, -math.inf
    for _ in range(draws):
        z = model.posterior(h, S, gen)
        mu, L = metrics.fit_moments(z)
        u = metrics.whiten(z, mu, L).float()
        up = torch.randn(u.shape, generator=gen)
        nq, npr = critic(u, hu).double(), critic(up, hu).double()
        sq = sq + nq.mean(-1)
        se = se + npr.exp().mean(-1)
        mx = max(mx, float(npr.max()))
    critic.train(was)
    return float((sq / draws - se / draws + 1.0).mean()), mx


def readings(critic, gen):
    r64, m64 = read(critic, 64, 32, gen)
    r1024, m1024 = read(critic, 1024, 8, gen)
    return r64, r1024, max(m64, m1024)


gen = torch.Generator().manual_seed(SEED)
# (a) the checkpoint's joint critic as it is
t0 = time.time()
r64, m64 = read(nu_xz, 64, 64, gen)
r512, _ = read(nu_xz, 512, 8, gen)
r1024, m1024 = read(nu_xz, 1024, 8, gen)
print(f"(a) joint critic as saved: R64 {r64:.3f} (64 draws)  R512 {r512:.3f} (8)  R1024 {r1024:.3f} (8)  "
      f"max nu(u') {max(m64, m1024):.2f}  [{time.time() - t0:.1f} s]", flush=True)
# the spread of the ac_train_step reading itself: 4 samples of one S = 64 fit per sentence, one draw
one = []
for _ in range(64):
    one.append(read(nu_xz, 64, 1, gen)[0])  # all 64 read; the 4-sample reading has the same mean
t = torch.tensor(one)
print(f"(a) R64 single draws: mean {t.mean():.3f} sd {t.std():.3f} (of a draw over 8 sentences)", flush=True)


def adam_for(critic, lr):
    """Adam over critic's parameters carrying the checkpoint's nu_xz group state (step, moments)."""
    opt = torch.optim.Adam(critic.parameters(), lr=lr)
    saved = ck["nu_opt"]
    sd = {"state": {i: copy.deepcopy(saved["state"][i]) for i in saved["param_groups"][0]["params"]},
          "param_groups": [dict(saved["param_groups"][0], lr=lr, fused=None, foreach=None)]}
    opt.load_state_dict(sd)
    return opt


def train_variant(name, n, S, lr, flags=()):
    if "fresh" in flags:
        torch.manual_seed(SEED + 3)
        critic = ivae.Critic(cfg.latent, cfg.hidden, cfg.nu_width, cfg.nu_layers)
        opt = torch.optim.Adam(critic.parameters(), lr=lr)
    else:
        critic = copy.deepcopy(nu_xz)
        opt = adam_for(critic, lr)
    g = torch.Generator().manual_seed(SEED + 1)
    rg = torch.Generator().manual_seed(SEED + 2)
    r64, r1024, mx = readings(critic, rg)
    print(f"{name}  upd 0  R64 {r64:.3f}  R1024 {r1024:.3f}  max nu(u') {mx:.2f}", flush=True)
    train_s, rows, ests = 0.0, [], []
    upd = 0
    while upd < UPDATES:
        t0 = time.time()
        with torch.no_grad():                                            # one fit per training step
            z = model.posterior(h, S, g)
            mu, L = metrics.fit_moments(z)
            u = metrics.whiten(z[:, :n], mu, L).float()                  # (8, n, Z), in-sample
        for _ in range(cfg.nu_steps):
            if "cos" in flags:
                for group in opt.param_groups:
                    group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * upd / UPDATES))
            up = torch.randn(u.shape, generator=g)
            with model.autocast():
                nq, npr = critic(u, hu).float(), critic(up, hu).float()
            est = metrics.dual_kl(nq, npr).mean()
            opt.zero_grad(set_to_none=True)
            (-est).backward()
            opt.step()
            ests.append(float(est.detach()))
            upd += 1
        train_s += time.time() - t0
        if not math.isfinite(ests[-1]):
            print(f"{name}  upd {upd}  non-finite estimate: diverged", flush=True)
            break
        if upd % READ_EVERY == 0:
            r64, r1024, mx = readings(critic, rg)
            tr = sum(ests[-READ_EVERY:]) / READ_EVERY
            rows.append((upd, r64, r1024, mx))
            print(f"{name}  upd {upd}  R64 {r64:.3f}  R1024 {r1024:.3f}  max nu(u') {mx:.2f}  "
                  f"train est (last {READ_EVERY}) {tr:.3f}  {1000 * train_s / upd:.1f} ms/update", flush=True)
    print(f"{name}  done: {1000 * train_s / max(upd, 1):.1f} ms/update (1 thread, shared CPU)", flush=True)


def check(steps):
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed + 999)                                # as evaluate does
        t0 = time.time()
        with torch.enable_grad():
            res, trace = metrics.residual_check(
                lambda k: model.posterior(h, k),
                lambda: ivae.Critic(cfg.latent, cfg.hidden, cfg.nu_width, cfg.nu_layers),
                cond=hu, steps=steps)
        dt = time.time() - t0
    print(f"(d) residual_check: {float(res.mean()):.3f}  per sentence {[round(float(v), 2) for v in res]}  "
          f"trace {[round(v, 3) for v in trace]}  {steps} updates, {dt:.1f} s, {1000 * dt / steps:.1f} ms/update "
          f"(incl. its 8 x 1,024-sample readout)", flush=True)


def step_cost(S, n, steps=8):
    """Seconds of one whole ivae.ac_train_step (model + critics updated, on COPIES) at ac_samples S,
    ac_critic_samples n, on the first full batch (32 equal-length test sentences, >= 25 tokens with <s> </s>)."""
    c = copy.deepcopy(cfg)
    c.ac_samples, c.ac_critic_samples = S, n
    m, cx, cz = copy.deepcopy(model), copy.deepcopy(nu_xz), copy.deepcopy(nu_z)
    for p in m.parameters():
        p.requires_grad_(True)
    m.train()
    opt = torch.optim.Adam(m.parameters(), lr=0.0)                       # lr 0: the model stays as it is
    nopt = torch.optim.Adam([{"params": list(cx.parameters()), "lr": 0.0}, {"params": list(cz.parameters())}], lr=0.0)
    b = next(bt for bt in data.Batcher(corpus.examples["test"], cfg.batch_size, shuffle=False).epoch(0)
             if len(bt.lengths) == cfg.batch_size and bt.tokens.shape[1] >= 25)   # a full batch, PTB-typical length
    ts = []
    for _ in range(steps):
        t0 = time.time()
        ivae.ac_train_step(m, cx, cz, opt, nopt, b.tokens, b.lengths, 1.0, c)
        ts.append(time.time() - t0)
    ts = sorted(ts[1:])
    print(f"(cost) ac_train_step, batch {len(b.lengths)} x {b.tokens.shape[1]} tokens, ac_samples {S}, "
          f"ac_critic_samples {n}: median {1000 * ts[len(ts) // 2]:.0f} ms/step over {len(ts)}", flush=True)


for v in VARIANTS:
    if v.startswith("cost"):                                             # cost:S:n
        _, S, n = v.split(":")
        step_cost(int(S), int(n))
    elif v.split(":")[0] == "check":                                   # check[:steps]
        check(int(v.split(":")[1]) if ":" in v else cfg.resid_check_steps)
    else:
        name, n, S, lr, *rest = v.split(":")
        UPDATES = int(rest[0]) if rest else 1500
        train_variant(name, int(n), int(S), float(lr), rest[1].split("+") if len(rest) > 1 else ())
