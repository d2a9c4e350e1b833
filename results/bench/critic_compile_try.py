"""A naive try (issue 13): torch.compile(ivae.critic_step) on one thread, bf16 autocast, fused Adam, batch 32 + 32.
Run from the repository root: PYTHONPATH=. python results/bench/critic_compile_try.py"""
import time, torch, ivae
torch.set_num_threads(1)
Z,H,B,N=32,256,32,50
torch.manual_seed(0)
nu_xz, nu_z = ivae.Critic(Z,H,512,3), ivae.Critic(Z,0,512,3)
opt = torch.optim.Adam(list(nu_xz.parameters())+list(nu_z.parameters()), lr=1e-5, fused=True)
h,z=torch.randn(B,H),torch.randn(B,Z)
bf16=lambda: torch.autocast("cpu",dtype=torch.bfloat16)
step = torch.compile(ivae.critic_step)
t0=time.perf_counter()
for _ in range(30): step(nu_xz,nu_z,opt,h,z,torch.randn(B,Z),bf16)
print(f"warm-up incl. compile {time.perf_counter()-t0:.1f} s")
t0=time.perf_counter()
for _ in range(N): step(nu_xz,nu_z,opt,h,z,torch.randn(B,Z),bf16)
print(f"compiled critic update: {(time.perf_counter()-t0)/N*1000:.2f} ms")
