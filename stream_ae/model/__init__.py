"""Autoencoder models, scaling, scoring, training and artifacts.

This is the only package in stream_ae that imports torch. Import from the
submodules (they are deliberately not re-exported here, so that importing one
light submodule does not pull in more than it needs):

* :mod:`stream_ae.model.autoencoders` — ``Autoencoder`` (base), ``ConvAutoencoder``,
  ``LSTMAutoencoder``, ``VariationalAutoencoder``, ``ARCHITECTURES``, ``build_model``
* :mod:`stream_ae.model.variants` — training variants: ``VARIANTS``,
  ``VARIANT_DEFAULTS``, ``make_strategy``, ``build_variant_model``
* :mod:`stream_ae.model.scaler` — ``ChannelScaler`` (numpy only)
* :mod:`stream_ae.model.scorer` — ``Scorer``, ``ScoreResult``, ``resolve_device``,
  ``set_threads``
* :mod:`stream_ae.model.train` — ``fit_autoencoder``, ``TrainedModel``
* :mod:`stream_ae.model.artifact` — ``ArtifactMetadata``, ``save_artifact``,
  ``load_artifact``, ``LoadedModel``, ``sha256_file``, ``write_current_pointer``

Window tensors everywhere are float32 ``(B, C, W)``: batch, channels, time steps.
"""
