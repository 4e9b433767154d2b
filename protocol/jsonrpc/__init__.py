"""JSON-RPC wire types, one module per area; `methods.py` lists them for the registry."""
