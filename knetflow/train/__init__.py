"""The training layer: the Knet-style Param/diff/grad API, optimizers, models."""
