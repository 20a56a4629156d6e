"""What each stage runs: dvc.yaml's deps list exactly the dltorch modules a stage script reaches, and the light
doors (fetch, synth) load neither torch nor matplotlib."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from dltorch.studies.registry import names as study_names
from dltorch.tasks.registry import task_modules
from tests.conftest import REPO

SRC = REPO / "src"
CONFIG = SRC / "dltorch" / "config.py"
# A per-model stage runs its own task's module (found by the registry) and that task's data module: dvc.yaml names
# both by ${item.task}, as DVC cannot look a list of files up by it.
TASK_DEPS = ("src/dltorch/tasks/${item.task}.py", "src/dltorch/data/${item.task}.py")
STUDY_DEP = "src/dltorch/studies/${key}.py"  # study@<name> runs its own study's module, found by the registry


def _file_of(module: str) -> Path | None:
    path = SRC / module.replace(".", "/")
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes under `if TYPE_CHECKING:`: annotations only, never run."""
    return {id(inner) for node in ast.walk(tree)
            if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
            for inner in ast.walk(node)}


def _imported(path: Path, whole_params: bool) -> set[str]:
    """Every dltorch module a file imports, at the top or inside functions (lazy imports count). config.py's lazy
    imports (the model zoo and the task registry) serve validating `models` and the studies: only a stage that loads
    the whole params.yaml (load_params) reaches them, not one that reads its own section (load_section)."""
    tree = ast.parse(path.read_text())
    skipped = _type_checking_only(tree)
    if path == CONFIG and not whole_params:
        skipped |= {id(inner) for node in tree.body if isinstance(node, ast.FunctionDef | ast.ClassDef)
                    for inner in ast.walk(node)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from pkg import module`
    if path.name == "__init__.py" and "pkgutil.iter_modules" in path.read_text():  # a package that imports its
        package = path.relative_to(SRC).parent.as_posix().replace("/", ".")  # every module, found by listing
        found.update(f"{package}.{module.stem}" for module in path.parent.glob("*.py") if module.stem != "__init__")
    return {name for name in found if name.split(".")[0] == "dltorch" and _file_of(name)}


def _runs_code(init: Path) -> bool:
    """A package's __init__ counts when it imports something; a docstring and a version string change nothing."""
    return any(isinstance(node, ast.Import | ast.ImportFrom) for node in ast.parse(init.read_text()).body)


def _reached(start: Path, whole_params: bool = True) -> set[str]:
    """Files (relative to the repo) of every dltorch module reached from `start`, with the packages they run."""
    seen: set[Path] = set()
    todo = [start]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in _imported(path, whole_params):
            parts = module.split(".")
            todo += [_file_of(".".join(parts[:i])) for i in range(1, len(parts) + 1)]
    return {path.relative_to(REPO).as_posix() for path in seen
            if path.name != "__init__.py" or path == start or _runs_code(path)}


def _listed(deps: list) -> set[str]:
    """dvc.yaml's code deps (stages/, src/) as files: a folder stands for every .py file under it."""
    files: set[str] = set()
    for dep in deps:
        dep = dep if isinstance(dep, str) else next(iter(dep))
        if not dep.startswith(("src/", "stages/")):
            continue
        folder = REPO / dep
        files.update(p.relative_to(REPO).as_posix() for p in folder.rglob("*.py")) if folder.is_dir() \
            else files.add(dep)
    return files


def _stages() -> dict[str, dict]:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {name: stage.get("do", stage) for name, stage in stages.items()}


def _script(stage: dict) -> Path:
    return REPO / stage["cmd"].split()[1]


def _expected(name: str, stage: dict) -> set[str]:
    script = _script(stage)
    expected = _reached(script, whole_params="load_params" in script.read_text())
    if "foreach" not in _raw_stage(name):
        return expected
    if name == "study":  # each study's module reaches the shared study code, and no other study
        study_files = {f"src/dltorch/studies/{study}.py" for study in study_names()}
        for study in study_names():
            reached = _reached(SRC / "dltorch" / "studies" / f"{study}.py")
            assert not reached & study_files - {f"src/dltorch/studies/{study}.py"}, f"study {study} imports another"
            expected |= reached - study_files
        return expected | {STUDY_DEP}
    # What several tasks run is every model's dep (a reader the classifiers and the generative tasks share: DVC
    # cannot list it for some models only); what one task alone runs must be its task or data module.
    own = {task: {path.replace("${item.task}", task) for path in TASK_DEPS} for task in task_modules()}
    closure = {task: _reached(SRC / "dltorch" / "tasks" / f"{task}.py") for task in task_modules()}
    reached = {task: modules - own[task] for task, modules in closure.items()}
    runs = Counter(module for modules in closure.values() for module in modules)
    shared = {module for module, count in runs.items() if count > 1} - set().union(*own.values())
    for task, modules in reached.items():
        assert (REPO / f"src/dltorch/data/{task}.py").is_file(), f"task {task} has no data module data/{task}.py"
        alone = modules - shared - expected
        assert not alone, f"{name}: only task {task} runs {sorted(alone)}: put it in its task or data module"
    return expected | shared | set(TASK_DEPS)


def _raw_stage(name: str) -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][name]


@pytest.mark.parametrize("name", sorted(_stages()))
def test_deps_list_exactly_the_modules_the_stage_runs(name):
    stage = _stages()[name]
    expected, listed = _expected(name, stage), _listed(stage["deps"])
    assert not expected - listed, f"{name}: runs but does not depend on {sorted(expected - listed)}"
    assert not listed - expected, f"{name}: depends on but never runs {sorted(listed - expected)}"


def test_per_model_stages_run_the_task_module_the_registry_finds():
    """The registry's import is dynamic; the walk sees it through the pipeline functions that ask for a task."""
    for name in ("train", "evaluate", "export"):
        assert "src/dltorch/tasks/registry.py" in _reached(_script(_stages()[name])), name


def test_the_walk_follows_lazy_imports_inside_functions():
    # config imports the model registry only inside a validator: the walk must still reach it.
    assert "src/dltorch/models/registry.py" in _reached(SRC / "dltorch" / "config.py")


@pytest.mark.parametrize("door", ["fetch", "synth"])
def test_light_doors_load_no_torch_or_matplotlib(door):
    code = (f"import runpy, sys; sys.argv = ['{door}', '--help']\n"
            f"try:\n    runpy.run_path('stages/{door}.py', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'matplotlib', 'torchvision'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "[]"


def test_light_door_reads_its_section_and_names_the_bad_key(tmp_path):
    from dltorch.config import load_section
    from dltorch.errors import ParamsError

    params = tmp_path / "params.yaml"
    params.write_text("fetch: {dataset: cifar}\nmodels: {broken: 1}\n")  # models are not the fetch stage's concern
    with pytest.raises(ParamsError, match=r"params.yaml: fetch.dataset: "):
        load_section(params, "fetch")
    params.write_text("fetch: {download: false}\nmodels: {broken: 1}\n")
    assert load_section(params, "fetch").download is False


def test_a_generator_of_one_set_reruns_synth_not_every_model():
    """Editing the shapes generator changes the shapes set (so the models reading it retrain through their data
    dep); it must not retrain the image classifiers through a code dep."""
    assert "src/dltorch/data/shapes.py" in _listed(_stages()["synth"]["deps"])
    for name in ("train", "evaluate", "export", "study"):
        assert "src/dltorch/data/shapes.py" not in _listed(_stages()[name]["deps"]), name
