"""Ingot's adapters: the JSON-RPC server (pygls), the REST server (aiohttp) and the `ingot` CLI."""
