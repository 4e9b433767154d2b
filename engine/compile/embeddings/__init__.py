"""Embedding models: export a sentence-transformers model to ONNX and check it (child steps)."""
