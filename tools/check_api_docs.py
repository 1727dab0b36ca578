"""Checks that every public name is documented and in the API reference.

For each public module, every name in its ``__all__`` must have a docstring
(as griffe, the docs' own loader, reads it: a class or function docstring,
or the string literal after a constant's assignment) and a ``::: module.name``
entry in one of the pages under ``docs/api/``. Prints the count of names
checked; exits 1 listing every missing one. Run by ``.ci/run``::

  python tools/check_api_docs.py
"""

from __future__ import annotations

import importlib
import pathlib
import re
import sys

import griffe

ROOT = pathlib.Path(__file__).resolve().parent.parent
PUBLIC_MODULES = (
  'flax_dense',
  'flax_dense.functional',
  'flax_dense.nnx',
  'flax_dense.checkpoint',
  'flax_dense.sharding',
)


def referenced_names(api_dir: pathlib.Path) -> set[str]:
  """The ``::: dotted.name`` entries of the Markdown pages in ``api_dir``."""
  names = set()
  for page in sorted(api_dir.glob('*.md')):
    names.update(re.findall(r'(?m)^:::\s*(\S+)', page.read_text()))
  return names


def missing(modules: tuple[str, ...], api_dir: pathlib.Path) -> list[str]:
  """A line for each public name without a docstring or a reference entry."""
  extensions = griffe.load_extensions(
    str(ROOT / 'tools' / 'griffe_rst_blocks.py') + ':RstBlocks'
  )
  package = griffe.load(
    'flax_dense', search_paths=[str(ROOT)], extensions=extensions
  )
  referenced = referenced_names(api_dir)
  problems = []
  for module_name in modules:
    module = importlib.import_module(module_name)
    for name in module.__all__:
      path = f'{module_name}.{name}'
      try:
        obj = package[path.removeprefix('flax_dense.')]
      except KeyError:
        problems.append(f'{path}: not found by griffe')
        continue
      if obj.is_alias:
        obj = obj.final_target
      if obj.docstring is None or not obj.docstring.value.strip():
        problems.append(f'{path}: no docstring')
      if path not in referenced:
        problems.append(f'{path}: no "::: {path}" in docs/api/*.md')
  return problems


def main() -> int:
  sys.path.insert(0, str(ROOT))
  problems = missing(PUBLIC_MODULES, ROOT / 'docs' / 'api')
  count = sum(
    len(importlib.import_module(name).__all__) for name in PUBLIC_MODULES
  )
  if problems:
    print(f'{len(problems)} problems in the API reference:')
    print('\n'.join(problems))
    return 1
  print(f'API reference: {count} public names, each documented')
  return 0


if __name__ == '__main__':
  sys.exit(main())
