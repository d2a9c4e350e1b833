import copy, os, sys, torch
sys.path.insert(0, '/work/main')
import ivae
orig = ivae.ac_train_step
state = {"n": 0}
def wrapped(model, nu_xz, nu_z, opt, nu_opt, x, lengths, beta, cfg):
    snap = (copy.deepcopy(model.state_dict()), copy.deepcopy(nu_xz.state_dict()), copy.deepcopy(opt.state_dict()), copy.deepcopy(nu_opt.state_dict()))
    rng = torch.get_rng_state()
    out = orig(model, nu_xz, nu_z, opt, nu_opt, x, lengths, beta, cfg)
    state["n"] += 1
    if state["n"] == 1 and os.environ.get("ACLR"):   # the second run: the residual critic's rate from step 5,002
        nu_opt.param_groups[0]["lr"] = float(os.environ["ACLR"])
        print("lr set", nu_opt.param_groups[0]["lr"], flush=True)
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
    badnu = [n for n, p in nu_xz.named_parameters() if not torch.isfinite(p).all()]
    vals = {k: float(v) for k, v in out.items()}
    if state["n"] % 10 == 0 or bad or badnu or any(v != v for v in vals.values()):
        print(state["n"], {k: round(v, 3) for k, v in vals.items()}, flush=True)
    if bad or badnu:
        torch.save({"snap": snap, "rng": rng, "x": x, "lengths": lengths, "beta": beta, "bad": bad, "badnu": badnu}, os.path.join(sys.argv[sys.argv.index("--out_dir") + 1], "nanstep.pt"))
        print("NONFINITE after step", state["n"], bad[:5], badnu[:5], flush=True)
        raise SystemExit(3)
    return out
ivae.ac_train_step = wrapped
ivae.main(sys.argv[1:])
