"""The code in the README and the docs guides runs, and the docs tools work."""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / 'tools'))

import run_doc_snippets  # noqa: E402


def test_readme_and_guides_code_blocks_run():
  # A subprocess: the sharding guide needs 8 CPU devices, set before JAX starts.
  result = subprocess.run(
    [sys.executable, str(ROOT / 'tools' / 'run_doc_snippets.py')],
    capture_output=True,
    text=True,
    timeout=600,
    env={**os.environ, 'PYTHONPATH': str(ROOT)},
  )
  assert result.returncode == 0, result.stderr[-6000:]
  assert 'README.md:' in result.stdout


def test_snippet_runner_finds_blocks_and_skips_marked_ones():
  text = (
    '```python\nx = 1\n```\n\n'
    '<!-- not run: needs a file -->\n```python\nopen("missing")\n```\n\n'
    '```bash\nls\n```\n\n```python\ny = x + 1\n```\n'
  )
  assert run_doc_snippets.blocks(text) == [(2, 'x = 1\n'), (15, 'y = x + 1\n')]


def test_snippet_runner_reports_the_failing_file_and_line(tmp_path):
  guide = tmp_path / 'guide.md'
  guide.write_text('Text.\n\n```python\nx = 1\nassert x == 2\n```\n')
  (failure,) = run_doc_snippets.run_file(guide)
  assert f'{guide}:4' in failure
  assert 'line 5' in failure and 'AssertionError' in failure


@pytest.mark.parametrize(
  ('text', 'expected'),
  [
    (
      'Example usage::\n\n  >>> x = 1\n  >>> x\n  1\n\nAfter.',
      'Example usage:\n\n```pycon\n>>> x = 1\n>>> x\n1\n```\n\nAfter.',
    ),
    ('See :class:`Loss` and :func:`~a.b`.', 'See `Loss` and `a.b`.'),
    (
      '  Attributes::\n\n    code\n  next',
      '  Attributes:\n\n  ```python\n  code\n  ```\n  next',
    ),
  ],
)
def test_rst_blocks_become_markdown(text, expected):
  griffe = pytest.importorskip('griffe')  # the docs extra
  del griffe
  import griffe_rst_blocks

  assert griffe_rst_blocks.rst_to_markdown(text) == expected
