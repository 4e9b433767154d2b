"""Runtimes: the Runtime seam and its implementations (heavy imports stay inside each module)."""
