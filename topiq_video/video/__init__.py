"""Video sources, colour conversion and full-reference alignment."""
