"""Runs the Python code blocks of the README and the docs guides.

Each file's ```` ```python ```` blocks run in order in one fresh namespace,
so a guide reads like a session; a block right after an HTML comment
``<!-- not run: reason -->`` is skipped. Runs with 8 simulated CPU devices
(set before JAX starts), which the sharding guide's mesh needs. Prints each
file's time; exits 1 naming the file and line of every block that failed.

Usage (from the repository root; ``tests/test_docs.py`` runs it)::

  python tools/run_doc_snippets.py [FILE.md ...]
"""

from __future__ import annotations

import os

os.environ['XLA_FLAGS'] = (
  os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8'
)
os.environ.setdefault('KERAS_BACKEND', 'jax')

import contextlib  # noqa: E402
import io  # noqa: E402
import pathlib  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
_BLOCK = re.compile(
  r'(?P<skip><!-- not run[^>]*-->\s*\n)?^```python\n(?P<code>.*?)^```',
  re.MULTILINE | re.DOTALL,
)


def default_files() -> list[pathlib.Path]:
  """README.md and every Markdown file under docs/."""
  return [ROOT / 'README.md', *sorted((ROOT / 'docs').rglob('*.md'))]


def blocks(text: str) -> list[tuple[int, str]]:
  """``(line, code)`` of every block to run in a Markdown text."""
  found = []
  for match in _BLOCK.finditer(text):
    if match['skip'] is None:
      line = text.count('\n', 0, match.start('code')) + 1
      found.append((line, match['code']))
  return found


def run_file(path: pathlib.Path) -> list[str]:
  """Runs ``path``'s blocks; the failures as ``file:line: error`` lines."""
  namespace: dict = {'__name__': f'snippets_{path.stem}'}
  failures = []
  for line, code in blocks(path.read_text()):
    try:
      with contextlib.redirect_stdout(io.StringIO()):  # the blocks' prints
        exec(compile('\n' * (line - 1) + code, str(path), 'exec'), namespace)
    except Exception:
      failures.append(f'{path}:{line}:\n{traceback.format_exc()}')
      break  # later blocks build on this one
  return failures


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  files = [pathlib.Path(f).resolve() for f in argv] or default_files()
  failures = []
  for path in files:
    start = time.perf_counter()
    failures += run_file(path)
    count = len(blocks(path.read_text()))
    elapsed = time.perf_counter() - start
    print(f'{path.relative_to(ROOT)}: {count} blocks, {elapsed:.1f} s')
  if failures:
    print(*failures, sep='\n', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
