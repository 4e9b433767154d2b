"""Ingot's engine: the domain of models — catalog, cache, downloads, compile, runtimes, loader, telemetry."""
