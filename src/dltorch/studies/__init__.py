"""The course's studies: each compares variants of one training recipe, most on a synthetic set.

A study is a module here (a registered Study subclass) and a params.yaml section of the same name listing its
variants; the DVC stage `study@<name>` (stages/study.py) runs it. `common.run_study` runs the study: a Study trains
every variant through engine.fit (common.run_variants), then writes a comparison figure, a metrics JSON (for
`dvc metrics`), long-format curves (for `dvc plots`), and one MLflow parent run with a child per variant. A study
of another shape (transfer: pretraining, then variants at several label budgets on images) is an AnyStudy with its
own `run` and writes the same outputs.
"""

from dltorch.studies.registry import get, names, register_study

__all__ = ["get", "names", "register_study"]
