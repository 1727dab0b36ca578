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

NNX models use the same names and rules. The layers in ``fd.nnx`` declare
the same class constants; :func:`logically_partitioned` sets them, in place,
as the ``out_sharding`` metadata of the variables of a built model and of
all its submodules (Flax's NNX spelling of axis names, read by
``nnx.get_partition_spec``), and :func:`mesh_shardings` maps an
``nnx.State`` onto the mesh, a ``NamedSharding`` in each variable. A sharded
NNX init, each device drawing only its own shards::

  @nnx.jit
  def create():
    model = fd.sharding.logically_partitioned(
        fd.nnx.PerPositionDense(P, D, K, rngs=nnx.Rngs(0)))
    state = nnx.state(model)
    shardings = fd.sharding.mesh_shardings(state, mesh)
    nnx.update(model, jax.lax.with_sharding_constraint(state, shardings))
    return model

  model = create()
  optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

or, for a model built already, ``state = nnx.state(model)`` and
``nnx.update(model, jax.device_put(state, fd.sharding.mesh_shardings(state,
mesh)))``; the same two lines place an optimizer's state, whose moments
carry the names of their params. ``nnx.jit`` steps then keep every variable
in its shards. Names set at construction work too::

  with jax.set_mesh(mesh), nnx.logical_axis_rules(fd.sharding.DEFAULT_RULES):
    model = fd.nnx.PerPositionDense(
        P, D, K, rngs=nnx.Rngs(0),
        kernel_metadata={'out_sharding': fd.nnx.PerPositionDense.kernel_axes})

Flax then places such variables as it creates them, on the shardings
:func:`mesh_shardings` gives.
"""

from flax_dense._src.distributed import initialize as initialize
from flax_dense._src.distributed import process_rows as process_rows
from flax_dense._src.sharding import DEFAULT_RULES as DEFAULT_RULES
from flax_dense._src.sharding import (
  logically_partitioned as logically_partitioned,
)
from flax_dense._src.sharding import mesh_shardings as mesh_shardings

__all__ = [
  'DEFAULT_RULES',
  'initialize',
  'logically_partitioned',
  'mesh_shardings',
  'process_rows',
]
