"""Datasets generated or shipped with the repository (no download at run time)."""
