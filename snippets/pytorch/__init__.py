"""Chapter 4 · PyTorch internals (深度学习计算与 PyTorch 内部机制).

Modules, tensors and autograd, devices, optimizers, persistence, data loading and mixed precision.
"""
