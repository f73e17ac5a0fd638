# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Why divide by √d_k
#
# This is a runnable notebook page: every output on it is recomputed when the site is built.
#
# ## Why it matters
#
# Scaled dot-product attention divides the scores by $\sqrt{d_k}$. Without that step the model still
# "works", but for large $d_k$ the softmax saturates into a near one-hot vector, its gradient nearly
# vanishes, and training slows down or stalls. Understanding this step is understanding how the
# softmax temperature shapes the gradient.
#
# ## Intuition
#
# The dot product $\mathbf q^\top\mathbf k$ is a sum of $d_k$ terms. When the terms are independent with
# zero mean, the **variance of the sum grows linearly with the number of terms**, so its standard
# deviation grows like $\sqrt{d_k}$. The further apart the scores, the more the softmax just "picks the
# largest", and a near one-hot softmax hardly reacts to its input: nudge the scores and the output stays
# put, so the gradient is close to 0. Dividing by $\sqrt{d_k}$ brings the scores' standard deviation back
# to 1 whatever $d_k$ is.
#
# ## The math
#
# Let the components of $\mathbf q,\mathbf k\in\mathbb R^{d_k}$ be independent with mean 0 and variance 1.
# Each term $q_ik_i$ has mean 0 and variance $E[q_i^2]E[k_i^2]=1$, hence
#
# $$
# E[\mathbf q^\top\mathbf k]=\sum_{i=1}^{d_k}E[q_i]E[k_i]=0,\qquad
# \operatorname{Var}[\mathbf q^\top\mathbf k]=\sum_{i=1}^{d_k}\operatorname{Var}[q_ik_i]=d_k ,
# $$
#
# while $\operatorname{Var}[\mathbf q^\top\mathbf k/\sqrt{d_k}]=1$. The Jacobian of
# $\mathbf s=\operatorname{softmax}(\mathbf z)$ is
#
# $$
# \frac{\partial\mathbf s}{\partial\mathbf z}=\operatorname{diag}(\mathbf s)-\mathbf s\mathbf s^\top ,
# $$
#
# and as $\mathbf s$ tends to a one-hot vector $\mathbf e_m$,
# $\operatorname{diag}(\mathbf e_m)-\mathbf e_m\mathbf e_m^\top=\mathbf 0$: the gradient flowing back
# through the softmax tends to 0 as a whole.
#
# ## The code
#
# The two functions below come from `snippets/attention/scaling.py` (printed straight from the source
# file, so the page cannot drift from the implementation): `dot_product_variance` estimates the variance
# of the dot product from $n$ random pairs, and `softmax_grad_norm` averages, over random $\mathbf q$ and
# 16 keys, the Frobenius norm of the softmax Jacobian and the largest weight.

# %%
import inspect

import torch

from snippets.attention import scaling

print(inspect.getsource(scaling.dot_product_variance))
print(inspect.getsource(scaling.softmax_grad_norm))

# %% [markdown]
# ## Verified against
#
# The tests in [tests/attention/test_scaling.py](../code/tests/attention/test_scaling.md) prove that for
# $d_k=4,64,512$ the variance over $10^5$ samples is within 5 % of $d_k$; that `softmax_jacobian` equals
# the Jacobian computed by `torch.autograd.functional.jacobian` in float64; that the Jacobian of a
# one-hot output is exactly 0; and that without scaling the Jacobian norm at $d_k=512$ is below 35 % of
# its value at $d_k=4$, while with scaling the two differ by less than 10 %. Every cell of this page runs
# when the site is built, and a failing `assert` fails the build.
#
# ## Questions from the notes
#
# ### Why divide by √d_k in attention?
#
# Under "5.1 为啥Attention的时候要除以$\sqrt{d_k}$？" the notes only quote the paper. The experiment below
# answers it: first check that the variance really is $d_k$, then compare how saturated the softmax is,
# and how large its gradient, with and without the scale.

# %%
g = torch.Generator().manual_seed(0)
dims = [1, 4, 16, 64, 256, 1024]
variances = [scaling.dot_product_variance(d, 10_000, generator=g) for d in dims]
raw = [scaling.softmax_grad_norm(d, scaled=False, n_trials=400, generator=g) for d in dims]
fix = [scaling.softmax_grad_norm(d, scaled=True, n_trials=400, generator=g) for d in dims]
print(f"{'d_k':>5} {'Var[q·k]':>9} {'|J| raw':>8} {'|J| scaled':>10} {'max α raw':>9} {'max α scaled':>12}")
for d, var, (jr, pr), (jf, pf) in zip(dims, variances, raw, fix):
    print(f"{d:>5} {var:>9.1f} {jr:>8.3f} {jf:>10.3f} {pr:>9.3f} {pf:>12.3f}")
for d, var in zip(dims, variances):
    assert abs(var / d - 1) < 0.1  # Var[q·k] ≈ d_k
assert raw[-1][0] < 0.3 * raw[1][0]  # without scaling the gradient collapses as d_k grows
assert abs(fix[-1][0] / fix[1][0] - 1) < 0.1  # with scaling it does not depend on d_k

# %% [markdown]
# The same numbers as a picture: on the left the variance of the dot product (log scale; the dashed line
# is $y=d_k$), on the right the norm of the softmax Jacobian. Unscaled, the Jacobian norm falls steadily
# with $d_k$ and the largest weight approaches 1 (the softmax saturates); scaled, both curves are flat.

# %%
import matplotlib.pyplot as plt

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
ax1.loglog(dims, variances, "o-", label="empirical Var[q·k]")
ax1.loglog(dims, dims, "k--", label="d_k")
ax1.set_xlabel("d_k")
ax1.set_ylabel("variance")
ax1.legend()
ax2.semilogx(dims, [j for j, _ in raw], "o-", label="softmax(q·k): unscaled")
ax2.semilogx(dims, [j for j, _ in fix], "s-", label="softmax(q·k / √d_k): scaled")
ax2.set_xlabel("d_k")
ax2.set_ylabel("mean ‖∂s/∂z‖_F")
ax2.set_ylim(bottom=0)
ax2.legend()
plt.show()

# %% [markdown]
# ## Errata
#
# > **Erratum: the formulas in the notes are garbled.** The notes' "当 `dk*d**k*` 的值比较小的时候 … 我们缩小点积
# > `1dk√*d**k*1` 倍" is what web-page math turns into when copied as text. It should read: for small
# > $d_k$ additive and dot-product attention perform alike; for large $d_k$ unscaled dot-product
# > attention does worse than additive attention. The authors **suspect** that the dot products grow with
# > $d_k$ and push the softmax into regions with tiny gradients, so they multiply the dot products by $\frac{1}{\sqrt{d_k}}$.
#
# The paper's own words are "we suspect": a conjecture backed by a variance argument, not a theorem. The
# experiment above checks both parts: the variance argument holds under the i.i.d. assumption, and under
# that assumption leaving out the scale does shrink the gradient as $d_k$ grows. Queries and keys in a
# trained model are not i.i.d., so $\sqrt{d_k}$ is a sound default rather than the only correct value
# (the `scale` argument of `F.scaled_dot_product_attention` lets you choose another).
#
# ## Key points
#
# - With independent components of mean 0 and variance 1, $\operatorname{Var}[\mathbf q^\top\mathbf k]=d_k$; after dividing by $\sqrt{d_k}$ the variance is 1.
# - The larger the scale of the scores, the closer the softmax is to one-hot, the closer its Jacobian $\operatorname{diag}(\mathbf s)-\mathbf s\mathbf s^\top$ is to 0, and the more the gradient vanishes.
# - In the experiment the unscaled Jacobian norm at $d_k=1024$ is a small fraction of its value at $d_k=4$; scaled, it does not depend on $d_k$.
#
# ## See also
#
# - [Scaled dot-product attention](scaled-dot-product-attention.md): the formula, the shapes and the masks.
# - [Masked softmax](masked-softmax.md): the softmax Jacobian and the gradient at masked positions.
# - Vaswani et al., *Attention Is All You Need*, 2017, §3.2.1 and footnote 4.
