"""The API reference check of tools/check_api_docs.py, and what it catches.

``.ci/run`` also runs the script itself, builds the docs strictly and checks
the sdist and wheel (tools/check_package.py); these tests keep the check
honest: it must fail for a public name missing from the reference.
"""

import importlib.util
import pathlib

import pytest

pytest.importorskip('griffe')

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _check_api_docs():
  spec = importlib.util.spec_from_file_location(
    'check_api_docs', ROOT / 'tools' / 'check_api_docs.py'
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_every_public_name_has_a_docstring_and_a_reference_entry():
  check = _check_api_docs()
  assert check.missing(check.PUBLIC_MODULES, ROOT / 'docs' / 'api') == []


def test_a_name_missing_from_the_reference_is_reported(tmp_path):
  check = _check_api_docs()
  (tmp_path / 'sharding.md').write_text(
    '# flax_dense.sharding\n\n::: flax_dense.sharding.initialize\n'
  )
  problems = check.missing(('flax_dense.sharding',), tmp_path)
  assert 'flax_dense.sharding.process_rows: no "::: flax_dense.sharding.' in (
    '\n'.join(problems)
  )
  assert not any('sharding.initialize:' in line for line in problems)


def test_a_constant_documented_by_a_comment_counts():
  check = _check_api_docs()
  problems = check.missing(('flax_dense',), ROOT / 'docs' / 'api')
  assert not any('KERAS_ACTIVATIONS: no docstring' in p for p in problems)
