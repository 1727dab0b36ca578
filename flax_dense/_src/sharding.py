"""Logical axis names of the layers' weights, mapped onto a device mesh."""

import dataclasses
from typing import Any

import flax.linen as nn
import jax

#: Logical-to-mesh axis rules for a 2-D ``('data', 'model')`` mesh: the batch
#: is split over ``data``, the positions of per-position weights (and of the
#: activations) over ``model``; feature axes are replicated. Pass them to
#: ``nn.logical_axis_rules``, ``nn.logical_to_mesh_sharding`` or
#: :func:`mesh_shardings`.
DEFAULT_RULES: tuple[tuple[str, str | None], ...] = (
  ('batch', 'data'),
  ('positions', 'model'),
  ('embed', None),
  ('classes', None),
)


def logically_partitioned(module: nn.Module) -> nn.Module:
  """Copies ``module`` with its default logical axis names on its weights.

  Every initializer field ``<name>_init`` whose class declares
  ``<name>_axes`` (e.g. ``PerPositionDense.kernel_axes``) is wrapped with
  ``nn.with_logical_partitioning(<name>_init, <name>_axes)``: the Flax idiom,
  applied with the names the layer documents. The variables it creates are
  ``nn.LogicallyPartitioned`` boxes; ``nn.get_partition_spec`` reads their
  names and :func:`mesh_shardings` maps them onto a mesh.

  Example usage::

    >>> import flax.linen as nn
    >>> import flax_dense as fd
    >>> import jax, jax.numpy as jnp
    >>> layer = fd.sharding.logically_partitioned(fd.PerPositionDense(10))
    >>> x = jnp.ones((8, 1024, 256))
    >>> abstract = jax.eval_shape(layer.init, jax.random.key(0), x)
    >>> nn.get_partition_spec(abstract)
    {'params': {'bias': P('positions', 'classes'),
                'kernel': P('positions', 'embed', 'classes')}}

  Args:
    module: a layer whose class declares axis names, e.g.
      ``fd.PerPositionDense(10)`` or ``fd.ConstProduct(trainable=True)``.

  Returns:
    A clone of ``module`` with partitioned initializers.

  Raises:
    ValueError: if ``module``'s class declares no ``<name>_axes`` for any of
      its ``<name>_init`` fields.
  """
  wrapped = {
    field.name: nn.with_logical_partitioning(
      getattr(module, field.name),
      getattr(module, field.name.removesuffix('_init') + '_axes'),
    )
    for field in dataclasses.fields(module)
    if field.name.endswith('_init')
    and hasattr(module, field.name.removesuffix('_init') + '_axes')
  }
  if not wrapped:
    raise ValueError(
      f'logically_partitioned: {type(module).__name__} declares no default'
      ' logical axis names (no <name>_axes for its <name>_init fields); wrap'
      ' its initializers yourself with nn.with_logical_partitioning(init,'
      ' names).'
    )
  return module.clone(**wrapped)


def mesh_shardings(
  tree: Any,
  mesh: jax.sharding.Mesh,
  rules: Any = DEFAULT_RULES,
) -> Any:
  """Shardings on ``mesh`` for a pytree of logically partitioned values.

  ``nn.logical_to_mesh_sharding(nn.get_partition_spec(tree), mesh, rules)``:
  a boxed leaf (``nn.LogicallyPartitioned``) gets a ``NamedSharding`` from
  its axis names and ``rules``; any other array is replicated. The result
  has the structure of the *unboxed* tree, so it serves as ``out_shardings``
  of a jitted init that returns ``nn.unbox(...)``.

  Example usage::

    >>> import flax.linen as nn
    >>> import flax_dense as fd
    >>> import jax, jax.numpy as jnp
    >>> layer = fd.sharding.logically_partitioned(fd.PerPositionDense(10))
    >>> x = jnp.ones((8, 16, 4))
    >>> abstract = jax.eval_shape(layer.init, jax.random.key(0), x)
    >>> auto = (jax.sharding.AxisType.Auto,) * 2
    >>> mesh = jax.make_mesh((1, 1), ('data', 'model'), axis_types=auto)
    >>> shardings = fd.sharding.mesh_shardings(abstract, mesh)
    >>> shardings['params']['kernel'].spec
    P('model', None, None)

  Args:
    tree: a pytree of arrays, ``jax.ShapeDtypeStruct`` or boxes, e.g.
      ``jax.eval_shape(module.init, key, x)`` of a partitioned module, or a
      train state built from such params.
    mesh: the device mesh, e.g. with axes ``('data', 'model')``.
    rules: logical-to-mesh axis rules; default :data:`DEFAULT_RULES`.

  Returns:
    A pytree of ``jax.sharding.NamedSharding``.
  """
  return nn.logical_to_mesh_sharding(nn.get_partition_spec(tree), mesh, rules)
