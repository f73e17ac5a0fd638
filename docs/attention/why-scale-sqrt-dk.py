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
# # 为什么除以 √d_k（scaling by √d_k）
#
# 这是一个可运行的笔记本页面：页面上的每个输出都是在构建网站时重新计算出来的。
#
# ## 为什么重要
#
# 缩放点积注意力把分数除以 $\sqrt{d_k}$。去掉这一步，模型仍然“能算”，但当 $d_k$ 较大时 softmax 会饱和成近似 one-hot，
# 梯度几乎消失，训练变慢甚至停滞。理解这一步，也就理解了 softmax 的温度（temperature）对梯度的影响。
#
# ## 直觉
#
# 点积 $\mathbf q^\top\mathbf k$ 是 $d_k$ 项之和。各项独立、均值为 0 时，和的**方差随项数线性增长**，
# 标准差按 $\sqrt{d_k}$ 增长。分数之间的差距越大，softmax 越接近“只选最大的那个”，而一个近似 one-hot 的 softmax
# 对输入几乎不敏感：稍微改变分数，输出不变，梯度也就接近 0。除以 $\sqrt{d_k}$ 把分数的标准差拉回 1，与 $d_k$ 无关。
#
# ## 数学
#
# 设 $\mathbf q,\mathbf k\in\mathbb R^{d_k}$ 的分量相互独立，均值为 0、方差为 1。每一项 $q_ik_i$ 的均值为 0、方差为
# $E[q_i^2]E[k_i^2]=1$，于是
#
# $$
# E[\mathbf q^\top\mathbf k]=\sum_{i=1}^{d_k}E[q_i]E[k_i]=0,\qquad
# \operatorname{Var}[\mathbf q^\top\mathbf k]=\sum_{i=1}^{d_k}\operatorname{Var}[q_ik_i]=d_k ,
# $$
#
# 而 $\operatorname{Var}[\mathbf q^\top\mathbf k/\sqrt{d_k}]=1$。softmax $\mathbf s=\operatorname{softmax}(\mathbf z)$ 的雅可比矩阵是
#
# $$
# \frac{\partial\mathbf s}{\partial\mathbf z}=\operatorname{diag}(\mathbf s)-\mathbf s\mathbf s^\top ,
# $$
#
# 当 $\mathbf s$ 趋于 one-hot 向量 $\mathbf e_m$ 时，$\operatorname{diag}(\mathbf e_m)-\mathbf e_m\mathbf e_m^\top=\mathbf 0$：
# 反向传播经过 softmax 的梯度整体趋于 0。
#
# ## 代码
#
# 下面两个函数来自 `snippets/attention/scaling.py`（这里直接打印源文件中的代码，页面不会与实现脱节）：
# `dot_product_variance` 用 $n$ 对随机向量估计点积的方差，`softmax_grad_norm` 对随机的 $\mathbf q$ 与 16 个键
# 计算 softmax 雅可比矩阵的 Frobenius 范数的平均值与最大权重的平均值。

# %%
import inspect

import torch

from snippets.attention import scaling

print(inspect.getsource(scaling.dot_product_variance))
print(inspect.getsource(scaling.softmax_grad_norm))

# %% [markdown]
# ## 验证
#
# 测试 [tests/attention/test_scaling.py](../code/tests/attention/test_scaling.md) 证明：$d_k=4,64,512$ 时在
# $10^5$ 个样本上的方差与 $d_k$ 相差不到 5%；`softmax_jacobian` 与 `torch.autograd.functional.jacobian`
# 计算的雅可比矩阵在 float64 下一致；one-hot 输出的雅可比矩阵恰为 0；不缩放时 $d_k=512$ 的雅可比范数不到
# $d_k=4$ 时的 35%，缩放后两者相差不到 10%。本页的每个代码单元在构建网站时运行，其中的 `assert` 失败会让构建失败。
#
# ## 笔记中的问题
#
# ### 为啥 Attention 的时候要除以 √d_k？
#
# 笔记在“5.1 为啥Attention的时候要除以$\sqrt{d_k}$？”下只引用了论文原文。下面用实验回答：先验证方差确实是
# $d_k$，再比较缩放与不缩放时 softmax 的饱和程度和梯度大小。

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
# 把同一组数画出来：左图是点积方差（对数坐标，虚线为 $y=d_k$），右图是 softmax 雅可比范数。
# 不缩放时雅可比范数随 $d_k$ 单调下降，最大权重趋近 1（softmax 饱和）；缩放后两条曲线都是平的。

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
# ## 勘误
#
# > **勘误：笔记中的公式渲染错乱。** 笔记中“当 `dk*d**k*` 的值比较小的时候……我们缩小点积 `1dk√*d**k*1` 倍”是网页公式复制后的乱码，
# > 应读作：当 $d_k$ 较小时，加性注意力与点积注意力效果相近；当 $d_k$ 较大时，不缩放的点积注意力不如加性注意力。
# > 作者**怀疑**这是因为点积的数值随 $d_k$ 增大，把 softmax 推入梯度极小的区域，因此把点积乘以 $\frac{1}{\sqrt{d_k}}$。
#
# 原论文对此的措辞是“我们怀疑”（we suspect）——它是一个推测，配合一个方差论证，而不是定理。上面的实验同时验证了两点：
# 方差论证在独立同分布的假设下成立；在这一假设下，不缩放确实让梯度随 $d_k$ 变小。实际训练中的 $\mathbf q,\mathbf k$
# 并不独立同分布，所以 $\sqrt{d_k}$ 是一个合理的默认值，而不是唯一正确的值（`F.scaled_dot_product_attention` 的
# `scale` 参数允许改用其他值）。
#
# ## 要点
#
# - 分量独立、均值 0、方差 1 时，$\operatorname{Var}[\mathbf q^\top\mathbf k]=d_k$，除以 $\sqrt{d_k}$ 后方差为 1。
# - 分数的尺度越大，softmax 越接近 one-hot，雅可比矩阵 $\operatorname{diag}(\mathbf s)-\mathbf s\mathbf s^\top$ 越接近 0，梯度随之消失。
# - 实验中不缩放时 $d_k=1024$ 的雅可比范数只有 $d_k=4$ 时的一小部分；缩放后与 $d_k$ 无关。
#
# ## 延伸阅读
#
# - [缩放点积注意力](scaled-dot-product-attention.md)：公式、形状与掩码。
# - [掩码 softmax](masked-softmax.md)：softmax 的雅可比矩阵与被遮住位置的梯度。
# - Vaswani et al., *Attention Is All You Need*, 2017, §3.2.1 与脚注 4。
