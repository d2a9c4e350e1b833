import sys, json, torch
sys.path.insert(0, '/work/main')
import ivae, metrics, data
d = torch.load('/tmp/acdbg/nanstep.pt', weights_only=False)
cfgd = json.load(open('/tmp/acdbg/config.json'))
cfg = ivae.Config(**{k: v for k, v in cfgd.items() if k in ivae.Config.__dataclass_fields__})
ck = torch.load('/tmp/acdbg/checkpoint.pt', weights_only=False)
V = ck['model']['encoder.emb.weight'].shape[0]
torch.set_num_threads(1)
model, nu_xz, nu_z, opt, nu_opt = ivae.build(cfg, V, torch.device('cpu'))
model.load_state_dict(d['snap'][0]); nu_xz.load_state_dict(d['snap'][1]); opt.load_state_dict(d['snap'][2]); nu_opt.load_state_dict(d['snap'][3])
model.train()
torch.set_rng_state(d['rng'])
x, lengths = d['x'], d['lengths']
h, z_all = model(x, lengths, cfg.ac_samples)
mu, L = metrics.fit_moments(z_all)
diag = torch.diagonal(L, dim1=1, dim2=2)
print('L diag min/max', float(diag.min()), float(diag.max()), 'cond', float((diag.max(1).values/diag.min(1).values).max()))
u = metrics.whiten(z_all[:, :cfg.ac_critic_samples], mu, L).float()
print('|u| max', float(u.abs().max()), 'norm max', float(u.norm(dim=-1).max()))
hu = h.detach().unsqueeze(1); z = z_all[:, 0]
for i in range(cfg.nu_steps):
    u_p = torch.randn_like(u)
    with model.autocast():
        nu_q, nu_p = nu_xz(u.detach(), hu).float(), nu_xz(u_p, hu).float()
    print(i, 'nu_q max %.2f mean %.2f | nu_p max %.2f mean %.2f' % (nu_q.max(), nu_q.mean(), nu_p.max(), nu_p.mean()))
    with torch.no_grad():
        nq32, np32 = nu_xz(u.detach(), hu), nu_xz(u_p, hu)
    print('   fp32: nu_q max %.2f nu_p max %.2f' % (nq32.max(), np32.max()))
    kl = metrics.dual_kl(nu_q, nu_p).mean()
    nu_opt.zero_grad(); (-kl).backward(); nu_opt.step()
