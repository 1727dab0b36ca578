"""Keras interop: reading, building, hosting and exporting, over the layer
registry. Keras itself is imported only where a function needs it."""
