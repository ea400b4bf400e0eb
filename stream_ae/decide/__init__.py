"""Turning anomaly scores into decisions.

Scores come from :mod:`stream_ae.model.scorer` (higher = more anomalous); this
package holds the numpy-only threshold logic (:mod:`stream_ae.decide.threshold`)
so that calibration methods can be added without touching the model code.
"""
