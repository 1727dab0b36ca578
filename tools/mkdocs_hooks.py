"""MkDocs hooks (mkdocs.yml ``hooks:``): serve the committed benchmark plots.

The Performance guide shows the plots the benchmarks wrote under
``benchmarks/results/``; they are added to the site as
``benchmarks/<path>`` from where they are, so the docs hold no copy that
could fall behind a new run.
"""

from __future__ import annotations

import pathlib

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

RESULTS = (
  pathlib.Path(__file__).resolve().parent.parent / 'benchmarks' / 'results'
)
PLOTS = (
  'per_position_dense.png',
  'per_position_dense_nnx.png',
  'h100/per_position_dense.png',
)


def on_files(files: Files, config: MkDocsConfig) -> Files:
  for plot in PLOTS:
    files.append(
      File.generated(
        config, f'benchmarks/{plot}', abs_src_path=str(RESULTS / plot)
      )
    )
  return files
