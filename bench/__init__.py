"""Throughput benchmark for topiq-video (not part of the installed package); run ``python -m bench``."""
