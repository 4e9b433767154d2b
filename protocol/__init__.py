"""Ingot's wire types: JSON-RPC params/results, OpenAI REST shapes, the method registry and errors."""
