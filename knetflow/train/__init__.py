"""Training: two front ends over a shared core.

`knet/` is the Knet-style front end (`kf.diff`, `kf.grad`, `kf.minimize`,
`kf.sgd` ... `kf.adam`), `mxnet/` the MXNet-style one (`kf.sym`,
`kf.FeedForward`). Both use what lives here: the optimizers (`optimizers.py`;
`kf.optim` is `optim.py`), the one training step (`step.py`), the one fit loop
(`fit_loop.py`), the progress bar (`progress.py`), MXNet's initializer classes
(`initializer_classes.py`; `kf.init` is `init.py`), metrics and callbacks.
"""
