"""The training engine: optimizers, the loop, early stopping, the runner that ties them together."""
