r"""Where does a training step of ivae_mi.py spend its time on a GPU? (issue 13, GPU part; run on the lent
device with the corpora in gpu_data/: `IVAE_DATA_DIR=gpu_data python3 results/gpu/profile_step.py`).

1. torch.profiler over 20 steps of ivae_mi.train_step (PTB, batch 32, fp32): the top ops by CPU and by GPU
   time, the count of kernel launches and of host syncs per step, GPU-busy vs wall time.
2. The step in three parts (encoder + G_phi; the nu_steps critic updates; the rec update), each timed
   with a synchronize around it.
3. An experiment, not the scripts' code: the critic updates captured once in a CUDA graph (fused Adam with
   capturable=True, prior samples drawn outside the graph) and replayed, on the same batches and the same
   starting weights as the eager updates; the critics' weights are compared after all the steps (59).
A measurement harness: it imports ivae_mi to time its own functions.
"""
import copy
import sys
import time

import torch

sys.path.insert(0, ".")
import data       # noqa: E402
import ivae_mi    # noqa: E402


def main():
    device = torch.device("cuda")
    corpus = data.load_corpus("ptb", "gpu_data", ("train",))
    cfg = data.lm_defaults(ivae_mi.Config(data="ptb"), "ptb")
    cfg.precision = "fp32"
    autocast = data.autocast_for(device, "fp32")
    batches = [b.to(device) for _, b in zip(range(200), data.Batcher(corpus.examples["train"], 32, seed=0).epoch(0))]
    data.set_seed(0)
    model, nu_xz, nu_z = ivae_mi.build(cfg, len(corpus.vocab), device)
    opt, nu_opt = ivae_mi.optimizers(model, nu_xz, nu_z, cfg)

    def step(b):
        return ivae_mi.train_step(model, nu_xz, nu_z, opt, nu_opt, b, 1.0, cfg, autocast)

    for b in batches[:20]:
        step(b)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for b in batches[20:120]:
        out = step(b)
    torch.cuda.synchronize()
    print(f"eager step: {1000 * (time.perf_counter() - t) / 100:.2f} ms (100 steps, one sync at the end)")

    # 1. profiler
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for b in batches[120:140]:
            out = step(b)
        torch.cuda.synchronize()
    ka = prof.key_averages()
    print(ka.table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=50))
    for key in ("self_device_time_total", "self_cuda_time_total"):
        try:
            print(ka.table(sort_by=key, row_limit=15, max_name_column_width=50))
            break
        except Exception as err:                                         # the name differs across versions
            print("sort_by", key, "failed:", err)
    counts = {e.key: e.count for e in ka}
    for k in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cudaStreamSynchronize",
              "cudaMemcpyAsync", "aten::_local_scalar_dense", "aten::item", "cudaDeviceSynchronize"):
        if k in counts:
            print(f"{k}: {counts[k] / 20:.1f} per step")
    try:
        gpu_us = sum(e.self_device_time_total for e in ka if e.device_type == torch.autograd.DeviceType.CUDA)
        print(f"GPU busy (sum of kernel times): {gpu_us / 1000 / 20:.2f} ms per step")
    except Exception as err:
        print("GPU busy: failed:", err)

    # 2. the parts
    parts = {"encoder+G": 0.0, "critics": 0.0, "rec update": 0.0}
    for b in batches[140:190]:
        torch.cuda.synchronize(); t0 = time.perf_counter()
        h = model.encoder(b.tokens, b.lengths).float()
        z = model.posterior(h, 1).squeeze(1)
        torch.cuda.synchronize(); t1 = time.perf_counter()
        zp = torch.randn(cfg.nu_steps, *z.shape, device=device)
        for i in range(cfg.nu_steps):
            ivae_mi.critic_step(nu_xz, nu_z, nu_opt, h.detach(), z.detach(), zp[i], autocast)
        torch.cuda.synchronize(); t2 = time.perf_counter()
        rec = ivae_mi.sentence_nll(model.decoder, b.tokens, z).mean()
        loss = rec + nu_z(z).mean()
        opt.zero_grad(set_to_none=True); loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip); opt.step()
        torch.cuda.synchronize(); t3 = time.perf_counter()
        parts["encoder+G"] += t1 - t0; parts["critics"] += t2 - t1; parts["rec update"] += t3 - t2
    print("parts (ms, synced):", {k: round(1000 * v / 50, 2) for k, v in parts.items()})

    # 3. CUDA graph of the critic updates
    B, Z, H = 32, cfg.latent, cfg.hidden
    xz_e, z_e = copy.deepcopy(nu_xz), copy.deepcopy(nu_z)
    xz_g, z_g = copy.deepcopy(nu_xz), copy.deepcopy(nu_z)
    opt_e = torch.optim.Adam(list(xz_e.parameters()) + list(z_e.parameters()), lr=cfg.nu_lr, fused=True)
    opt_g = torch.optim.Adam(list(xz_g.parameters()) + list(z_g.parameters()), lr=cfg.nu_lr, fused=True,
                             capturable=True)
    s_h, s_z = torch.zeros(B, H, device=device), torch.zeros(B, Z, device=device)
    s_p = torch.zeros(cfg.nu_steps, B, Z, device=device)

    def loop(nxz, nz, o, h, z, zp):
        out = None
        for i in range(cfg.nu_steps):
            out = ivae_mi.critic_step(nxz, nz, o, h, z, zp[i], autocast)
        return out

    with torch.no_grad():
        h32 = [model.encoder(b.tokens, b.lengths).float() for b in batches[:60] if len(b.lengths) == B]
        z32 = [model.posterior(h, 1).squeeze(1) for h in h32]
    g_gen = torch.Generator(device=device); g_gen.manual_seed(1)
    prior = [torch.randn(cfg.nu_steps, B, Z, device=device, generator=g_gen) for _ in h32]
    # warm-up of the graph copy on a side stream (3 steps), mirrored on the eager copy
    side = torch.cuda.Stream(); side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for i in range(3):
            s_h.copy_(h32[i]); s_z.copy_(z32[i]); s_p.copy_(prior[i])
            loop(xz_g, z_g, opt_g, s_h, s_z, s_p)
    torch.cuda.current_stream().wait_stream(side)
    for i in range(3):
        loop(xz_e, z_e, opt_e, h32[i], z32[i], prior[i])
    graph = torch.cuda.CUDAGraph()
    opt_g.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        s_out = loop(xz_g, z_g, opt_g, s_h, s_z, s_p)
    n = len(h32) - 3
    torch.cuda.synchronize(); t = time.perf_counter()
    for i in range(3, len(h32)):
        s_h.copy_(h32[i]); s_z.copy_(z32[i]); s_p.copy_(prior[i])
        graph.replay()
    torch.cuda.synchronize(); tg = time.perf_counter() - t
    t = time.perf_counter()
    for i in range(3, len(h32)):
        e_out = loop(xz_e, z_e, opt_e, h32[i], z32[i], prior[i])
    torch.cuda.synchronize(); te = time.perf_counter() - t
    print(f"critic updates per step over {n} steps: eager {1000 * te / n:.2f} ms, graph {1000 * tg / n:.2f} ms")
    diff = max((a - b).abs().max().item() for a, b in zip(list(xz_e.parameters()) + list(z_e.parameters()),
                                                          list(xz_g.parameters()) + list(z_g.parameters())))
    print(f"max |weight eager - weight graph| after {n + 3} steps: {diff:.3e}; last estimates eager "
          f"{[round(float(v), 5) for v in e_out]} graph {[round(float(v), 5) for v in s_out]}")


if __name__ == "__main__":
    main()
