"""Chapter 14 · Python idioms used by the knowledge base's own code (Python 惯用法)."""
