"""Chapter 13 · computational performance: graphs, compilation, distributed data parallel (计算性能)."""
