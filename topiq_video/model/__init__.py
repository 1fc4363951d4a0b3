"""CFANet network, checkpoint registry and weight handling."""
