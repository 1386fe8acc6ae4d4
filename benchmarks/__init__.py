"""Benchmarks: ``python -m benchmarks [NAME ...]`` runs ``benchmarks/bench_<NAME>.py``'s ``main()``.

Benchmarks print figures and ratios against a baseline measured in the same run; they are not tests.
"""
