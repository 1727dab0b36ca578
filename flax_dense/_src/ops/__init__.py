"""The pure core: per-example math, its kernels, and the checked batched layers."""
