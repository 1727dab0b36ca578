"""A griffe extension: our docstrings' reStructuredText bits as Markdown.

It also reads a constant's ``#:`` comment block (the Sphinx convention our
modules use, e.g. for ``KERAS_ACTIVATIONS``) as its docstring.

The docstrings follow Flax's style: Google sections, but ``Example usage::``
literal blocks and ``:class:`X``` roles, which Markdown would render as
plain paragraphs (and whose ``x['kernel']`` it would read as links). This
turns each paragraph ending in ``::`` and its indented block into a fenced
code block (``pycon`` when it holds ``>>>`` lines) and each role into a code
span, before mkdocstrings parses the docstring. Configured in mkdocs.yml.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r':(?:class|func|meth|mod|data|attr|obj|exc):`~?([^`]+)`')


def _indent(line: str) -> int:
  return len(line) - len(line.lstrip())


def rst_to_markdown(text: str) -> str:
  """``text`` with literal blocks fenced and roles as code spans.

  Args:
    text: a dedented docstring.

  Returns:
    The docstring in Markdown.

  >>> print(rst_to_markdown('See :func:`f`::\\n\\n  y = f(x)\\n\\nEnd.'))
  See `f`:
  <BLANKLINE>
  ```python
  y = f(x)
  ```
  <BLANKLINE>
  End.
  """
  lines = _ROLE.sub(r'`\1`', text).split('\n')
  out: list[str] = []
  index = 0
  while index < len(lines):
    line = lines[index]
    index += 1
    if not line.rstrip().endswith('::'):
      out.append(line)
      continue
    stripped = line.rstrip()[:-2].rstrip()
    out.append(stripped + ':' if stripped.strip() else '')
    base = _indent(line)
    start = index
    while start < len(lines) and not lines[start].strip():
      start += 1
    end = start
    while end < len(lines) and (
      not lines[end].strip() or _indent(lines[end]) > base
    ):
      end += 1
    while end > start and not lines[end - 1].strip():
      end -= 1
    block = lines[start:end]
    if not block:
      continue
    depth = min(_indent(b) for b in block if b.strip())
    language = 'pycon' if block[0].lstrip().startswith('>>>') else 'python'
    pad = ' ' * base
    out.append('')
    out.append(f'{pad}```{language}')
    out.extend(pad + b[depth:] if b.strip() else '' for b in block)
    out.append(f'{pad}```')
    index = end
  return '\n'.join(out)


def comment_docstring(lines: list[str], lineno: int) -> str | None:
  """The ``#:`` comment block right above line ``lineno`` (1-based), if any.

  >>> comment_docstring(['#: The rules.', '#: Two.', 'RULES = ()'], 3)
  'The rules.\nTwo.'
  """
  block = []
  index = lineno - 2
  while index >= 0 and lines[index].lstrip().startswith('#:'):
    block.append(lines[index].lstrip()[2:].strip())
    index -= 1
  return '\n'.join(reversed(block)) or None


class RstBlocks(griffe.Extension):
  """Rewrites every docstring with :func:`rst_to_markdown` as it loads."""

  def on_attribute_instance(
    self, *, attr: griffe.Attribute, **kwargs: Any
  ) -> None:
    if attr.docstring is None and attr.lineno is not None:
      try:
        lines = attr.lines_collection[attr.filepath]
      except (KeyError, TypeError):
        return
      text = comment_docstring(lines, attr.lineno)
      if text is not None:
        attr.docstring = griffe.Docstring(text, parent=attr)

  def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
    if obj.docstring is not None:
      obj.docstring.value = rst_to_markdown(obj.docstring.value)
