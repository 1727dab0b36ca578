"""Logical axis names of the layers' weights, mapped onto a device mesh."""

import dataclasses
from typing import Any, TypeVar

import flax.linen as nn
import jax
from flax import nnx
from jax.sharding import NamedSharding

ModuleT = TypeVar('ModuleT', nn.Module, nnx.Module)

#: Logical-to-mesh axis rules for a 2-D ``('data', 'model')`` mesh: the batch
#: is split over ``data``, the positions of per-position weights (and of the
#: activations) over ``model``; feature axes are replicated. Pass them to
#: :func:`mesh_shardings`, ``nn.logical_axis_rules`` /
#: ``nnx.logical_axis_rules`` or ``nn.logical_to_mesh_sharding``.
DEFAULT_RULES: tuple[tuple[str, str | None], ...] = (
  ('batch', 'data'),
  ('positions', 'model'),
  ('embed', None),
  ('classes', None),
)


def logically_partitioned(module: ModuleT) -> ModuleT:
  """Gives ``module``'s weights the default logical axis names of its layers.

  A layer class declares the names of its weights' axes as class constants
  ``<name>_axes``, e.g. ``PerPositionDense.kernel_axes == ('positions',
  'embed', 'classes')``; this applies them the Flax way:

  * a linen module is copied with every initializer field ``<name>_init``
    wrapped by ``nn.with_logical_partitioning(<name>_init, <name>_axes)``.
    The variables it creates are ``nn.LogicallyPartitioned`` boxes, read by
    ``nn.get_partition_spec``.
  * an NNX module, built already, is annotated in place and returned: in it
    and in every submodule, each variable ``<name>`` whose class declares
    ``<name>_axes`` gets them as its ``out_sharding`` metadata, the names
    ``nnx.with_partitioning`` and ``kernel_metadata={'out_sharding': ...}``
    set and ``nnx.get_partition_spec`` reads; variables that have an
    ``out_sharding`` already keep it. The names are only names, as in linen:
    the variables are also marked ``eager_sharding=False``, so copies made of
    them later (an ``nnx.Optimizer``'s moments carry the names too) are not
    placed when created, which would need a mesh and rules in context.
    Modules without such constants (``nnx.Linear``) are left as they are.

  Either way, :func:`mesh_shardings` maps the names onto a mesh.

  Example usage::

    >>> import flax.linen as nn
    >>> import flax_dense as fd
    >>> from flax import nnx
    >>> import jax, jax.numpy as jnp
    >>> layer = fd.sharding.logically_partitioned(fd.PerPositionDense(10))
    >>> x = jnp.ones((8, 1024, 256))
    >>> abstract = jax.eval_shape(layer.init, jax.random.key(0), x)
    >>> nn.get_partition_spec(abstract)
    {'params': {'bias': P('positions', 'classes'),
                'kernel': P('positions', 'embed', 'classes')}}
    >>> model = fd.sharding.logically_partitioned(
    ...   fd.nnx.PerPositionDense(16, 4, 10, rngs=nnx.Rngs(0)))
    >>> model.kernel.out_sharding
    ('positions', 'embed', 'classes')

  Args:
    module: a linen layer whose class declares axis names, e.g.
      ``fd.PerPositionDense(10)`` or ``fd.ConstProduct(trainable=True)``;
      or an NNX module (concrete or from ``nnx.eval_shape``) with at least
      one such layer in it, e.g. ``fd.nnx.PerPositionDense(...)`` or a model
      built of them.

  Returns:
    For linen, a clone of ``module`` with partitioned initializers; for
    NNX, ``module`` itself, annotated.

  Raises:
    ValueError: if ``module``'s class declares no ``<name>_axes`` for any of
      its ``<name>_init`` fields (linen), or if no variable of ``module``
      and its submodules has declared names (NNX).
  """
  if isinstance(module, nnx.Module):
    return _annotate_nnx(module)
  wrapped: dict[str, Any] = {
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


def _annotate_nnx(model: nnx.Module) -> nnx.Module:
  """:func:`logically_partitioned` of an NNX module, in place."""
  found = False
  for _, sub in nnx.iter_modules(model):
    for constant in dir(type(sub)):
      if not constant.endswith('_axes'):
        continue
      names = getattr(type(sub), constant)
      variable = getattr(sub, constant.removesuffix('_axes'), None)
      if not (isinstance(names, tuple) and isinstance(variable, nnx.Variable)):
        continue
      found = True
      if variable.get_metadata().get('out_sharding') is None:
        variable.set_metadata(out_sharding=names, eager_sharding=False)
  if not found:
    raise ValueError(
      f'logically_partitioned: no variable of {type(model).__name__} or its'
      ' submodules has default logical axis names (a <name>_axes class'
      ' constant for a variable <name>); name them yourself, e.g. with'
      " kernel_metadata={'out_sharding': names} or"
      ' kernel_init=nnx.with_partitioning(init, names).'
    )
  return model


def mesh_shardings(
  tree: Any,
  mesh: jax.sharding.Mesh,
  rules: Any = DEFAULT_RULES,
) -> Any:
  """Shardings on ``mesh`` for a pytree of logically partitioned values.

  Every leaf gets a ``NamedSharding`` from its logical axis names and
  ``rules``; a leaf without names is replicated.

  * linen: ``nn.logical_to_mesh_sharding(nn.get_partition_spec(tree), mesh,
    rules)``. A boxed leaf (``nn.LogicallyPartitioned``) is named; the result
    has the structure of the *unboxed* tree, so it serves as
    ``out_shardings`` of a jitted init that returns ``nn.unbox(...)``. A
    name without a rule is replicated.
  * NNX: an ``nnx.Variable`` is named by its ``out_sharding`` metadata
    (:func:`logically_partitioned`, ``nnx.with_partitioning``). The result
    has the structure of the state, each variable holding its
    ``NamedSharding``, so ``jax.device_put(state, shardings)`` or
    ``jax.lax.with_sharding_constraint(state, shardings)`` places it, and
    ``nnx.update(model, placed)`` puts it back. The names are mapped as
    Flax maps them (``nnx.get_partition_spec`` under
    ``nnx.logical_axis_rules(rules)``), so the shardings are those Flax's
    eager sharding would give under the same mesh and rules; a name without
    a rule is taken for a mesh axis name.

  A sharded NNX init, each device drawing only its own shards::

    @nnx.jit
    def create():
      model = fd.sharding.logically_partitioned(
          fd.nnx.PerPositionDense(P, D, K, rngs=nnx.Rngs(0)))
      state = nnx.state(model)
      shardings = fd.sharding.mesh_shardings(state, mesh)
      nnx.update(model, jax.lax.with_sharding_constraint(state, shardings))
      return model

  Example usage::

    >>> import flax.linen as nn
    >>> import flax_dense as fd
    >>> from flax import nnx
    >>> import jax, jax.numpy as jnp
    >>> layer = fd.sharding.logically_partitioned(fd.PerPositionDense(10))
    >>> x = jnp.ones((8, 16, 4))
    >>> abstract = jax.eval_shape(layer.init, jax.random.key(0), x)
    >>> auto = (jax.sharding.AxisType.Auto,) * 2
    >>> mesh = jax.make_mesh((1, 1), ('data', 'model'), axis_types=auto)
    >>> shardings = fd.sharding.mesh_shardings(abstract, mesh)
    >>> shardings['params']['kernel'].spec
    P('model', None, None)
    >>> model = fd.sharding.logically_partitioned(
    ...   fd.nnx.PerPositionDense(16, 4, 10, rngs=nnx.Rngs(0)))
    >>> state = nnx.state(model)
    >>> shardings = fd.sharding.mesh_shardings(state, mesh)
    >>> shardings['kernel'].get_value().spec
    P('model', None, None)
    >>> nnx.update(model, jax.device_put(state, shardings))
    >>> model.kernel.get_value().sharding.spec
    P('model', None, None)

  Args:
    tree: a pytree of arrays, ``jax.ShapeDtypeStruct`` or boxes, e.g.
      ``jax.eval_shape(module.init, key, x)`` of a partitioned linen module
      or a train state built from such params; or an NNX state, e.g.
      ``nnx.state(model)`` or ``nnx.state(optimizer)`` (an NNX module or
      optimizer itself stands for its ``nnx.state``).
    mesh: the device mesh, e.g. with axes ``('data', 'model')``.
    rules: logical-to-mesh axis rules; default :data:`DEFAULT_RULES`.

  Returns:
    A pytree of ``jax.sharding.NamedSharding``: the structure of the unboxed
    ``tree``, or of the NNX state with a sharding in each variable.
  """
  if isinstance(tree, nnx.Pytree):
    tree = nnx.state(tree)

  def sharding(leaf):
    if not isinstance(leaf, nnx.Variable):
      spec = nn.get_partition_spec(leaf)
      return nn.spmd.logical_to_mesh_sharding(spec, mesh, rules)
    with nnx.logical_axis_rules(rules):
      spec = nnx.get_partition_spec(leaf).get_value()
    return leaf.replace(NamedSharding(mesh, spec))

  return jax.tree.map(
    sharding,
    tree,
    is_leaf=lambda x: isinstance(x, nnx.Variable | nn.meta.AxisMetadata),
  )
