"""Two probes of a trained style_transfer.py model's code z, after the run (one thread, a few minutes):

1. Does z carry the sentiment? A fresh classifier (logistic regression, then an MLP twice the width of the
   adversary) is trained on the codes of training sentences and scored on held-out validation sentences.
   ~50% held-out accuracy: the code carries no sentiment such a classifier finds (the adversary succeeded).
2. Does the implicit prior match q(z)? A fresh critic of the run's critic's shape, trained as a classifier
   of z ~ q(z) against z ~ p(z), scored on held-out samples: its accuracy certifies a total-variation
   distance and through it a lower bound on KL(q(z) || p); the Donsker-Varadhan value is printed beside
   it as an estimate.

The run logged ~ln 2 for its adversary's loss and ~0 for its critic's KL the whole run; these probes say
whether that means "nothing to find" or "critics too weak". Run from the repository root:
    PYTHONPATH=. python results/yelp_style_no_train/probe_codes.py --ckpt runs/style/best.pt --data_dir ../shared/data
"""
import argparse
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

import data
import style_transfer as st


@torch.no_grad()
def codes(model, examples, device, batch_size=256, gen=None):
    """One z ~ q(z|x) per sentence (no input noise: the evaluation-time encoder) -> (N, Z), labels (N,)."""
    zs, ys = [], []
    for i in range(0, len(examples), batch_size):
        batch = data.collate(examples[i:i + batch_size]).to(device)
        zs.append(model.encoder(batch.tokens, batch.lengths, 1, gen).squeeze(1).float())
        ys.append(batch.labels)
    return torch.cat(zs), torch.cat(ys).float()


def balanced_accuracy(logits, y):
    """Mean of the two classes' accuracies (%): 50 for any constant guess, whatever the class balance."""
    pred = (logits > 0).float()
    return float(((pred[y == 1] == 1).float().mean() + (pred[y == 0] == 0).float().mean()) / 2) * 100


def fit(net, x, y, x_test, y_test, steps=3000, lr=1e-3, batch=256, seed=0):
    """Binary classifier on (x, y) by Adam; returns its held-out balanced accuracy (%)."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        idx = torch.randint(len(x), (batch,), generator=g)
        loss = F.binary_cross_entropy_with_logits(net(x[idx]).squeeze(-1), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return balanced_accuracy(net(x_test).squeeze(-1), y_test)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", default="runs/style/best.pt")
    ap.add_argument("--data_dir", default="data")
    ap.add_argument("--n_train", type=int, default=20000, help="training sentences whose codes train the probes")
    ap.add_argument("--n_test", type=int, default=5000, help="held-out validation sentences")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    device = torch.device("cpu")
    ckpt = data.load_checkpoint(args.ckpt, device)
    cfg = st.Config(**{k: v for k, v in ckpt["config"].items() if k in st.Config.__dataclass_fields__})
    corpus = data.load_style_corpus(args.data_dir, cfg.split, vocab=data.Vocab.from_state_dict(ckpt["vocab"]),
                                    verbose=False)
    model = st.StyleModel(len(corpus.vocab), cfg).to(device)
    model.load_state_dict(ckpt["model"])
    model.eval()
    gen = torch.Generator().manual_seed(1)
    pick = lambda split, n: [corpus.examples[split][i] for i in torch.randperm(len(corpus.examples[split]),
                                                                               generator=gen)[:n].tolist()]
    z_tr, y_tr = codes(model, pick("train", args.n_train), device, gen=gen)
    z_te, y_te = codes(model, pick("valid", args.n_test), device, gen=gen)
    Z = z_tr.shape[1]
    print(f"model of step {ckpt['step']}; codes: {len(z_tr):,} training / {len(z_te):,} held-out sentences, "
          f"{Z}-d; positives {float(y_tr.mean()) * 100:.1f}% / {float(y_te.mean()) * 100:.1f}%")
    # 1. sentiment in z
    lin = fit(nn.Linear(Z, 1), z_tr, y_tr, z_te, y_te)
    mlp = fit(nn.Sequential(nn.Linear(Z, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 1)),
              z_tr, y_tr, z_te, y_te)
    with torch.no_grad():
        adv = balanced_accuracy(model.class_logit(z_te), y_te)
    print(f"sentiment from z, held-out balanced accuracy (chance 50%): the run's adversary {adv:.1f}% | fresh "
          f"logistic regression {lin:.1f}% | fresh MLP 256-256 {mlp:.1f}%")
    # 2. q(z) against the implicit prior
    with torch.no_grad():
        p_tr = model.prior_sample(len(z_tr), device, gen).float()
        p_te = model.prior_sample(len(z_te), device, gen).float()
        dv_run = float(model.critic(z_te).mean() - (torch.logsumexp(model.critic(p_te), 0) - math.log(len(p_te))))
        print(f"the run's critic nu: mean / std {float(model.critic(z_te).mean()):.3f} / {float(model.critic(z_te).std()):.3f}"
              f" on codes, {float(model.critic(p_te).mean()):.3f} / {float(model.critic(p_te).std()):.3f} on prior samples")
    critic = nn.Sequential(nn.Linear(Z, cfg.nu_width), nn.LeakyReLU(0.2), nn.Linear(cfg.nu_width, cfg.nu_width),
                           nn.LeakyReLU(0.2), nn.Linear(cfg.nu_width, 1))
    x = torch.cat([z_tr, p_tr])
    y = torch.cat([torch.ones(len(z_tr)), torch.zeros(len(p_tr))])
    acc = fit(critic, x, y, torch.cat([z_te, p_te]), torch.cat([torch.ones(len(z_te)), torch.zeros(len(p_te))]),
              steps=6000)
    # Certified (99% confidence): any classifier's accuracy on a balanced mixture is at most (1 + TV) / 2, so
    # TV >= 2 (acc - margin) - 1 with Hoeffding's margin for n held-out samples, and KL >= -log(1 - TV^2)
    # (Bretagnolle-Huber). The dual estimates after it are estimates: with KL >> log n their sample means
    # overshoot (metrics.dual_kl's docstring).
    n = len(z_te) + len(p_te)
    tv = max(0.0, 2 * (acc / 100 - math.sqrt(math.log(1 / 0.01) / (2 * n))) - 1)
    kl_cert = -math.log(1 - tv ** 2) if tv < 1 else float("inf")
    with torch.no_grad():       # a classifier's logit is a critic
        t_q, t_p = critic(z_te).squeeze(-1).double(), critic(p_te).squeeze(-1).double()
        dv = float(t_q.mean() - (torch.logsumexp(t_p, 0) - math.log(len(t_p))))
    print(f"q(z) vs the implicit prior, {n:,} held-out samples: fresh critic accuracy {acc:.2f}% (chance 50%) "
          f"=> TV >= {tv:.3f} and KL(q(z)||p) >= {kl_cert:.2f} nats (certified, 99% confidence); estimates: "
          f"Donsker-Varadhan with the fresh critic {dv:.1f} nats, the run's critic {dv_run:.3f} nats")

if __name__ == "__main__":
    main()
