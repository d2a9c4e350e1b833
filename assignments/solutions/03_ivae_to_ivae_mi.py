"""Reference solution of assignment 3: the KL terms of iVAE (Eq. 10) and iVAE_MI (Eq. 14), the critics'
loss (Eq. 9 and 13), and the identity behind Eq. (11). Written out in full, without the repository's code."""


def dual_kl(nu_q, nu_p):
    # E_q[nu] - E_p[exp(nu)] + 1 (Eq. 7 with the +1), exp in float64; means over the batch
    return nu_q.double().mean() - nu_p.double().exp().mean() + 1.0


def regulariser(nu_xz, nu_z, z, h, objective):
    if objective == "ivae":
        return nu_xz(z, h.detach()).mean()              # Eq. (10): phi reaches the KL only through z
    if objective == "ivae_mi":
        return nu_z(z).mean()                           # Eq. (14): the aggregated posterior's KL
    raise ValueError(objective)


def critic_loss(nu_xz, nu_z, z, h, z_prior):
    z, h = z.detach(), h.detach()                       # the critics' step must not move the encoder
    kl_cond = dual_kl(nu_xz(z, h), nu_xz(z_prior, h))   # Eq. (9): nu(x, z) on q(z|x) vs p(z), same x
    kl_agg = dual_kl(nu_z(z), nu_z(z_prior))            # Eq. (13): nu(z) on q(z) vs p(z)
    return -(kl_cond + kl_agg)                          # both critics maximise their estimates


def mutual_info(kl_cond, kl_agg):
    # E_x KL(q(z|x) || p) = I(x; z) + KL(q(z) || p)  =>  I = E_x KL(q(z|x) || p) - KL(q(z) || p)
    return kl_cond - kl_agg
