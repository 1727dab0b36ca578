"""The NNX front end: one module per layer, over the pure core."""
