"""Report writers: JSON, CSV and self-contained HTML."""
