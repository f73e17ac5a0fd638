"""Chapter 9 · attention mechanisms (注意力机制)."""
