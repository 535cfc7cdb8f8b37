"""Benchmarks and quality evaluation (the ``bench`` extra). Never imported by the runtime."""
