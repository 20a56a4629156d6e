"""The course's studies: each compares variants of one training recipe on a synthetic set.

A study is a DVC stage of the same name (stages/<study>.py) and a params.yaml section listing its variants.
`run_study` trains every variant with the engine's own pieces, then writes a comparison figure, a metrics
JSON (for `dvc metrics`), long-format curves (for `dvc plots`), and one MLflow parent run with a child per variant.
"""

from dltorch.studies.common import run_study

__all__ = ["run_study"]
