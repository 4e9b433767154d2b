"""Put on the vLLM server's PYTHONPATH (alone: engine/runtimes holds a vllm.py that would shadow the
real package); holds only what vLLM imports from Ingot by module name."""
