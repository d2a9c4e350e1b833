"""Where one critic update's time goes on the CPU (issue 13): both critics of ivae.py, batch 32 + 32, one thread,
bf16 autocast and fused Adam as in training (ivae.critic_step itself), 50 updates under torch.profiler after 30
warm-up updates; then one 64x512 @ 512x512 matrix product alone in bf16 and fp32, the floor of a critic layer;
then a naive torch.compile of ivae.critic_step, timed the same way (its first call compiles).
Run from the repository root: PYTHONPATH=. python results/bench/critic_profile.py"""
import time

import torch
from torch.profiler import ProfilerActivity, profile

import ivae

torch.set_num_threads(1)
Z, H, B, N = 32, 256, 32, 50
torch.manual_seed(0)
nu_xz, nu_z = ivae.Critic(Z, H, 512, 3), ivae.Critic(Z, 0, 512, 3)
opt = torch.optim.Adam(list(nu_xz.parameters()) + list(nu_z.parameters()), lr=1e-5, fused=True)
h, z = torch.randn(B, H), torch.randn(B, Z)
bf16 = lambda: torch.autocast("cpu", dtype=torch.bfloat16)
for _ in range(30):
    ivae.critic_step(nu_xz, nu_z, opt, h, z, torch.randn(B, Z), bf16)
t0 = time.perf_counter()
for _ in range(N):
    ivae.critic_step(nu_xz, nu_z, opt, h, z, torch.randn(B, Z), bf16)
print(f"one critic update, no profiler: {(time.perf_counter() - t0) / N * 1000:.2f} ms")
with profile(activities=[ProfilerActivity.CPU]) as prof:
    for _ in range(N):
        ivae.critic_step(nu_xz, nu_z, opt, h, z, torch.randn(B, Z), bf16)
rows = {e.key: e for e in prof.key_averages()}
total = sum(e.self_cpu_time_total for e in rows.values()) / N / 1000
print(f"one critic update under the profiler: {total:.2f} ms; self time per update by op:")
for key in ["aten::mm", "aten::addmm", "aten::copy_", "aten::_fused_adam_", "Optimizer.step#Adam.step"]:
    e = rows[key]
    print(f"  {key:28s} {e.self_cpu_time_total / N / 1000:5.2f} ms  ({e.count // N} calls)")
for dtype in (torch.bfloat16, torch.float32):
    x, w = torch.randn(64, 512, dtype=dtype), torch.randn(512, 512, dtype=dtype)
    for _ in range(50):
        x @ w
    t0 = time.perf_counter()
    for _ in range(2000):
        x @ w
    dt = (time.perf_counter() - t0) / 2000
    print(f"(64x512) @ (512x512) {str(dtype)[6:]}: {dt * 1e6:.0f} us = {2 * 64 * 512 * 512 / dt / 1e9:.0f} GFLOP/s")

step = torch.compile(ivae.critic_step)
t0 = time.perf_counter()
for _ in range(30):
    step(nu_xz, nu_z, opt, h, z, torch.randn(B, Z), bf16)
print(f"torch.compile(critic_step): 30 warm-up updates incl. compiling {time.perf_counter() - t0:.1f} s")
t0 = time.perf_counter()
for _ in range(N):
    step(nu_xz, nu_z, opt, h, z, torch.randn(B, Z), bf16)
print(f"one compiled critic update: {(time.perf_counter() - t0) / N * 1000:.2f} ms")
