"""Helpers the tests share: fake builds, real SmolLM2 and tiny models, a loopback Hub, card fixtures."""
