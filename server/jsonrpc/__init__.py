"""The JSON-RPC engine server: pygls over stdio with LSP framing, hosting the REST port too."""
