"""Chapter 10 · the Transformer."""
