"""The containers of imported Keras models (a Sequential is the chain graph),
for linen and NNX; nothing here imports Keras."""
