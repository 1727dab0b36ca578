"""Keras interop: weights, model import."""
