"""Test support: shared paths, model builders and a local Hugging Face Hub look-alike."""
