"""Reference solution of assignment 2: the implicit posterior G_phi(h, eps) (Eq. 6), the covariance of its
affine special case, and active units (Burda et al. 2016). Written out in full, without the repository's code."""
import torch
import torch.nn as nn


class Generator(nn.Module):
    """z = G_phi(h, eps), eps ~ N(0, I_E): an MLP on cat(h, eps), or one Linear when layers = 0."""

    def __init__(self, hidden, noise_dim, latent, layers, width):
        super().__init__()
        # layer sizes: (H + E) -> width -> ... -> width -> Z, LeakyReLU between consecutive Linears
        dims = [hidden + noise_dim] + [width] * layers + [latent]
        mods = []
        for i in range(len(dims) - 1):
            mods.append(nn.Linear(dims[i], dims[i + 1]))
            if i < len(dims) - 2:                       # no nonlinearity after the last layer
                mods.append(nn.LeakyReLU())
        self.net = nn.Sequential(*mods)
        self.noise_dim = noise_dim

    def forward(self, h, n_samples):
        B, H = h.shape
        eps = torch.randn(B, n_samples, self.noise_dim, device=h.device)        # (B, S, E): fresh noise per sample
        h = h.unsqueeze(1).expand(B, n_samples, H)                              # (B, S, H): the same h for each
        return self.net(torch.cat([h, eps], -1))                                # (B, S, Z)


def affine_covariance(linear, noise_dim):
    # z = A h + c + W eps with W = the last noise_dim columns of the weight: Cov(z | h) = W Cov(eps) W^T = W W^T
    w_eps = linear.weight[:, -noise_dim:]               # (Z, E): how the noise enters z
    return w_eps @ w_eps.T                              # (Z, Z), the same for every h


def active_units(means, threshold=0.01):
    # A_d = Var_x E_q[z_d | x] over the N sentences (biased: divide by N), active if A_d >= threshold
    means = means.double()                              # (N, Z)
    var = (means - means.mean(0)).pow(2).mean(0)        # (Z,)
    return int((var >= threshold).sum()), var
