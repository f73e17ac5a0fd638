"""Chapter 11 · LLM-era topics (大模型时代)."""
