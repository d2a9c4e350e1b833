"""Two candidate CPU speed tricks for a training step (issue 13), timed on their own before touching the scripts.

1. A fused linear + cross-entropy for the decoder's 10k-word output layer: the shapes of a PTB step (736 target
   tokens = 32 sentences of 23; PTB's average is ≈ 22, 82,430 test targets over 3,761 sentences; H = 256,
   V = 10,000; every 10th target padding, to go through ignore_index, which training batches of one length
   never need), forward + backward, bf16 matrix products. The scripts
   do `F.cross_entropy(logits.float(), ...)` on autocast logits; the fused version forms the gradient wrt the
   logits (softmax - onehot) in its forward pass and keeps it in bf16, so no fp32 (N, V) tensor survives the
   forward and backward is two matrix products. Beside both: the three bf16 matrix products alone, the floor.
2. Dropout's mask: F.dropout (bernoulli_) against a uniform draw compared with p, on a (32, 23, 256) tensor.

Run from the repository root: python results/bench/output_layer_bench.py [threads]"""
import sys
import time

import torch
import torch.nn.functional as F

torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
torch.manual_seed(0)
N, H, V = 736, 256, 10000
lin = torch.nn.Linear(H, V)
h0 = torch.randn(N, H)
tgt = torch.randint(1, V, (N,))
tgt[::10] = 0                                                            # padding (ignore_index 0)


class FusedLinearCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, w, b, target):
        hb, wb = h.bfloat16(), w.bfloat16()
        ls = torch.log_softmax(torch.addmm(b.bfloat16(), hb, wb.t()).float(), 1)   # (N, V) fp32
        keep = (target != 0).float()
        t = target.unsqueeze(1)
        nll = -ls.gather(1, t).squeeze(1) * keep
        p = ls.exp_()                                                    # softmax
        p.scatter_add_(1, t, -torch.ones(N, 1))                          # softmax - onehot
        p.mul_(keep.unsqueeze(1))
        ctx.save_for_backward(hb, wb, p.bfloat16())
        return nll

    @staticmethod
    def backward(ctx, go):
        hb, wb, g = ctx.saved_tensors
        gh = (g @ wb).float() * go.unsqueeze(1)
        gw = (g.t() @ (hb * go.unsqueeze(1).bfloat16())).float()
        gb = (go.bfloat16() @ g).float()
        return gh, gw, gb, None


def scripts_way(h):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = lin(h)
    return F.cross_entropy(logits.float(), tgt, ignore_index=0, reduction="none")


def fused(h):
    return FusedLinearCE.apply(h, lin.weight, lin.bias, tgt)


def grads(fn):
    h = h0.clone().requires_grad_()
    loss = fn(h)
    (loss * 0.03).sum().backward()
    out = loss.detach(), h.grad, lin.weight.grad.clone(), lin.bias.grad.clone()
    lin.zero_grad(set_to_none=True)
    return out


def median_ms(fn, reps=40, warmup=5):
    ts = []
    for i in range(reps + warmup):
        t0 = time.perf_counter()
        fn()
        if i >= warmup:
            ts.append(time.perf_counter() - t0)
    return sorted(ts)[reps // 2] * 1e3


def fwd_bwd(fn):
    def run():
        h = h0.clone().requires_grad_()
        fn(h).sum().backward()
        lin.zero_grad(set_to_none=True)
    return run


hb, wb = h0.bfloat16(), lin.weight.detach().bfloat16()


def three_products():
    logits = hb @ wb.t()
    logits.t() @ hb
    logits @ wb


print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
for name, a, b in zip(("nll", "grad h", "grad W", "grad b"), grads(scripts_way), grads(fused)):
    print(f"fused vs the scripts' way, {name}: relative difference {((a - b).norm() / a.norm()).item():.1e}")
for r in range(3):
    print(f"round {r}: output layer fwd+bwd, the scripts' way {median_ms(fwd_bwd(scripts_way)):.1f} ms, fused "
          f"{median_ms(fwd_bwd(fused)):.1f} ms, its three bf16 matrix products alone {median_ms(three_products):.1f} ms")
x = torch.randn(32, 23, 256, dtype=torch.bfloat16)
for r in range(2):
    print(f"round {r}: dropout p=0.5 on (32, 23, 256) bf16: F.dropout {median_ms(lambda: F.dropout(x, 0.5, True)):.2f} ms, "
          f"x * (rand_like(x) >= p) / (1 - p) {median_ms(lambda: x * (torch.rand_like(x) >= 0.5) / 0.5):.2f} ms")
