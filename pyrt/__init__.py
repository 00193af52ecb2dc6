"""pyrt: run quantized GGUF language models on a laptop CPU."""
