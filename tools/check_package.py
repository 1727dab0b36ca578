"""Builds the sdist and wheel and checks them the way a user would meet them.

1. ``python -m build`` makes the sdist, then the wheel from the sdist (so
   the sdist is complete enough to build).
2. The sdist must hold the package, ``examples/``, ``tests/`` (with their
   fixtures), ``docs/``, ``benchmarks/``, ``mkdocs.yml``, ``LICENSE``,
   ``CHANGELOG.md`` and ``README.md``; the wheel must hold ``py.typed`` and
   the license, and no tests.
3. A fresh virtual environment installs the wheel with its ``test`` extra,
   from the package index like any user; outside the source tree it
   imports the installed copy (version as in the metadata), runs a layer,
   and runs some of the sdist's own tests (examples included) with the
   sdist's copy of the package removed, so they test the wheel.

Run by ``.ci/run``; prints each step's time. Usage::

  python tools/check_package.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile

ROOT = pathlib.Path(__file__).resolve().parent.parent

#: Paths every sdist must hold, relative to its top directory.
SDIST_REQUIRED = (
  'flax_dense/__init__.py',
  'flax_dense/py.typed',
  'examples/train_per_position.py',
  'tests/conftest.py',
  'tests/fixtures/README.md',
  'docs/index.md',
  'benchmarks/per_position_dense.py',
  'benchmarks/results/per_position_dense.json',
  'mkdocs.yml',
  'LICENSE',
  'CHANGELOG.md',
  'README.md',
  'pyproject.toml',
)

#: The sdist's tests run against the installed wheel: quick ones that need
#: ``examples/`` and ``tests/fixtures/`` from the sdist.
SDIST_TESTS = (
  'tests/test_core.py',
  'tests/test_keras_h5.py',
  'tests/test_examples.py::test_const_product_keeps_constants_fixed',
)

SMOKE = """
import importlib.metadata, pathlib, sys
import jax, jax.numpy as jnp
import flax_dense as fd
package = pathlib.Path(fd.__file__).parent
assert sys.prefix in str(package), (package, sys.prefix)
assert (package / 'py.typed').is_file()
assert fd.__version__ == importlib.metadata.version('flax_dense')
layer = fd.PerPositionDense(3)
x = jnp.ones((2, 4, 5))
y = layer.apply(layer.init(jax.random.key(0), x), x)
assert y.shape == (2, 4, 3)
print('smoke import OK:', fd.__version__, package)
"""


def run(command: list[str], **kwargs) -> None:
  start = time.perf_counter()
  print('+', ' '.join(map(str, command)), flush=True)
  subprocess.run(command, check=True, **kwargs)
  print(f'  ({time.perf_counter() - start:.1f} s)', flush=True)


def check_contents(sdist: pathlib.Path, wheel: pathlib.Path) -> list[str]:
  """What the sdist or the wheel lacks (or the wheel holds but should not)."""
  with tarfile.open(sdist) as archive:
    names = {
      name.split('/', 1)[1] for name in archive.getnames() if '/' in name
    }
  problems = [
    f'sdist lacks {path}' for path in SDIST_REQUIRED if path not in names
  ]
  with zipfile.ZipFile(wheel) as archive:
    wheel_names = archive.namelist()
  if 'flax_dense/py.typed' not in wheel_names:
    problems.append('wheel lacks flax_dense/py.typed')
  if not any(name.endswith('licenses/LICENSE') for name in wheel_names):
    problems.append('wheel lacks its LICENSE in .dist-info/licenses')
  problems += [
    f'wheel holds {name}' for name in wheel_names if name.startswith('tests/')
  ]
  return problems


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--keep', type=pathlib.Path, help='work here, keep it')
  args = parser.parse_args(argv)
  work = args.keep or pathlib.Path(tempfile.mkdtemp(prefix='flax_dense_pkg_'))
  work.mkdir(parents=True, exist_ok=True)
  try:
    dist = work / 'dist'
    run([sys.executable, '-m', 'build', '--outdir', str(dist), str(ROOT)])
    (sdist,) = dist.glob('*.tar.gz')
    (wheel,) = dist.glob('*.whl')
    problems = check_contents(sdist, wheel)
    if problems:
      print('\n'.join(problems))
      return 1
    print(f'contents OK: {sdist.name}, {wheel.name}')

    venv = work / 'venv'
    run([sys.executable, '-m', 'venv', str(venv)])
    python = venv / 'bin' / 'python'
    run([str(python), '-m', 'pip', 'install', '-q', f'{wheel}[test]'])
    run([str(python), '-c', SMOKE], cwd=work)

    with tarfile.open(sdist) as archive:
      archive.extractall(work / 'sdist', filter='data')
    (source,) = (work / 'sdist').iterdir()
    shutil.rmtree(source / 'flax_dense')  # The tests must import the wheel.
    run(
      [str(venv / 'bin' / 'pytest'), '-p', 'no:cacheprovider', *SDIST_TESTS],
      cwd=source,
    )
  finally:
    if args.keep is None:
      shutil.rmtree(work, ignore_errors=True)
  print('package OK')
  return 0


if __name__ == '__main__':
  sys.exit(main())
