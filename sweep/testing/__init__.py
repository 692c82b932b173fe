"""Test doubles shipped with the package: the scripted Ollama/OpenAI stand-in and the old measuring path.

Why in the package: the test suite and ``python -m benchmarks`` both use them, and a benchmark
must not import the (unpackaged) tests.
"""
