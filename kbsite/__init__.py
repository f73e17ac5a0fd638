"""Site glue: the topic catalog, build-time figures and search-index post-processing."""
