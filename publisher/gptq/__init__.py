"""GPTQ: the worker that runs in its own environment, how publisher calls it, and the folder it leaves."""
