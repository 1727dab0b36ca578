"""Sharding the layers on a device mesh with Flax logical partitioning.

Nothing here is home-made SPMD: the weights get logical axis names the Flax
way (``nn.with_logical_partitioning``), the names are mapped onto a
``jax.sharding.Mesh`` by rules (``nn.logical_to_mesh_sharding``), and
``jax.jit`` with those ``NamedSharding`` s lets XLA partition the program.

Every parameterised layer documents its weights' axis names as class
constants, positions first::

  PerPositionDense.kernel_axes == ('positions', 'embed', 'classes')
  PerPositionDense.bias_axes == ('positions', 'classes')
  ConstProduct.kernel_axes == ('embed',)

The recommended rules, :data:`DEFAULT_RULES`, shard the batch over a
``data`` mesh axis and the positions over a ``model`` axis; features are
replicated. A per-position layer then needs no communication at all in its
forward pass: device (i, j) holds batch shard i and the kernels of position
shard j, and computes exactly its block of the output. Only the gradient of
the kernel is summed over ``data``, as in any data-parallel step.

A sharded init, step by step::

  mesh = jax.make_mesh((2, 4), ('data', 'model'),
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)
  layer = fd.sharding.logically_partitioned(fd.PerPositionDense(10))
  abstract = jax.eval_shape(layer.init, key, x)       # boxed, no memory
  shardings = fd.sharding.mesh_shardings(abstract, mesh)
  variables = jax.jit(lambda k, x: nn.unbox(layer.init(k, x)),
                      out_shardings=shardings)(key, x)

Inputs ``(batch, positions, features)`` are placed by the same rules:
``nn.logical_to_mesh_sharding(PartitionSpec('batch', 'positions', None),
mesh, fd.sharding.DEFAULT_RULES)``, i.e. ``NamedSharding(mesh,
PartitionSpec('data', 'model', None))``. ``examples/train_sharded.py``
trains a model this way, on simulated CPU devices or real GPUs/TPUs, on one
host or many.

To wrap an initializer yourself, use the class constants:
``fd.PerPositionDense(10, kernel_init=nn.with_logical_partitioning(init,
fd.PerPositionDense.kernel_axes))``.
"""

from flax_dense._src.sharding import DEFAULT_RULES as DEFAULT_RULES
from flax_dense._src.sharding import (
  logically_partitioned as logically_partitioned,
)
from flax_dense._src.sharding import mesh_shardings as mesh_shardings

__all__ = [
  'DEFAULT_RULES',
  'logically_partitioned',
  'mesh_shardings',
]
