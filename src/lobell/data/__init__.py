"""Data: files -> checked columns and labels -> datasets -> batches."""
