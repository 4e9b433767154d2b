"""The model catalog: what models exist, their variants, alias resolution and fit to this machine."""
