"""Serving models over HTTP (`polymodal serve`) and predicting big tables in chunks."""
