"""Chapter 4 · PyTorch internals: modules, tensors and autograd, devices, optimizers, persistence, data, AMP (深度学习计算与 PyTorch 内部机制)."""
