"""Decoding request bodies into Arrow batches and handing them to the write path."""
