"""Benchmarks: dh_tf against its peers on the same generated Parquet data, one process per loader.

Run everything with ``make bench`` (``python -m benchmarks.run``); ``--help`` lists the flags.
Modules, one job each: ``data`` (generate and cache the Parquet files), ``loaders`` (every loader
and consumer, run in a child process), ``run`` (plan the cases, run them, collect results),
``report`` (markdown, JSON and chart), ``memory`` (dh_tf memory at two table sizes).
"""
