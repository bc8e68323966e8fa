"""Runtimes: the programs that make and load artifacts, each behind one module (llama.cpp today)."""
