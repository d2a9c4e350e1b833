"""Time one critic update (both critics of ivae.py, batch 32 + 32, one thread): default Adam, foreach, fused;
then with the critics under bf16 autocast. Run from the repository root: PYTHONPATH=. python results/bench/critic_update_bench.py"""
import torch, time, ivae
torch.set_num_threads(1)
Z,H,B=32,256,32
def run(opt_kwargs, steps=200, bf16=False):
    torch.manual_seed(0)
    nu_xz, nu_z = ivae.Critic(Z,H,512,3), ivae.Critic(Z,0,512,3)
    opt = torch.optim.Adam(list(nu_xz.parameters())+list(nu_z.parameters()), lr=1e-5, **opt_kwargs)
    h=torch.randn(B,H); z=torch.randn(B,Z)
    for i in range(20): ivae.critic_step(nu_xz,nu_z,opt,h,z,torch.randn(B,Z))
    t=time.perf_counter()
    for i in range(steps):
        ivae.critic_step(nu_xz,nu_z,opt,h,z,torch.randn(B,Z))
    return (time.perf_counter()-t)/steps*1000
for kw in [{}, {"foreach": True}, {"fused": True}]:
    try: print(kw, f"{run(kw):.2f} ms per critic update")
    except Exception as e: print(kw, "ERR", e)
import metrics
def critic_step_bf16(nu_xz, nu_z, nu_opt, h, z, z_prior):
    B = z.shape[0]
    zz, hh = torch.cat([z, z_prior]), torch.cat([h, h])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        nu_c, nu_a = nu_xz(zz, hh), nu_z(zz)
    nu_c, nu_a = nu_c.float(), nu_a.float()
    kl_cond = metrics.dual_kl(nu_c[:B], nu_c[B:]); kl_agg = metrics.dual_kl(nu_a[:B], nu_a[B:])
    nu_opt.zero_grad(set_to_none=True); (-(kl_cond + kl_agg)).backward(); nu_opt.step()
ivae.critic_step = critic_step_bf16
for kw in [{}, {"fused": True}]:
    print("bf16", kw, f"{run(kw):.2f} ms per critic update")
