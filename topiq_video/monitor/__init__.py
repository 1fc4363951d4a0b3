"""Live streams watched around the clock: sources that reconnect, detectors, TOPIQ scores
batched across streams, alerts with evidence, a Prometheus exporter and a live page."""
