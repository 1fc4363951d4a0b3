"""Reports: per-frame tables, the HTML page (Jinja2 templates), and writing them."""
