"""The `ingot` command line."""
