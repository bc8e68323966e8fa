"""Artifact formats: one catalogue of quant types per format (GGUF's is llama.cpp's, in gguf_quants)."""
