"""Evaluation: measures with significance, latency and FLOP floors, store scale, the serving benchmark's
report, the model catalog and RESULTS.md.

Layer: above training; below serving and the CLI.
"""
