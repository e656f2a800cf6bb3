"""Benchmarks: each cost of tenancy measured beside a baseline in the same run.

``python -m benchmarks`` (``make bench``, ``make bench-full``) writes
``benchmarks/RESULTS.md``. Absolute times are not comparable between runs or
machines; the ratios beside each baseline are what is reported.
"""
