"""Scoring detectors against labelled data (numpy only).

:mod:`stream_ae.evaluate.metrics` implements the SKAB leaderboard protocol
(``shared/data/skab/README.md``): point-wise F1 / FAR / MAR, per-event detection
and delay, and NAB-style changepoint scores. Every metric is a pure function of
numpy arrays that returns raw sums, so results from many files can be pooled with
``+`` before the final rates and scores are taken.
"""
