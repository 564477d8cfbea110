"""dvc.yaml declares what each stage really uses: the package code it imports and the params
it reads. A missing dep means DVC would skip a stage whose result has changed."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, repo_params

SRC = REPO / "src"
STAGES = {name: stage.get("do", stage)  # a foreach stage's template is under "do"
          for name, stage in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].items()}
PYTHON_STAGES = {name: stage for name, stage in STAGES.items()
                 if "-m handwriting." in stage["cmd"]}


def module_file(module: str) -> Path | None:
    base = SRC / Path(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_files(module: str) -> set[Path]:
    """Every file of the package that importing ``module`` loads, directly or indirectly,
    including imports inside functions (a stage calls them)."""
    seen: set[Path] = set()
    pending = [module]
    while pending:
        name = pending.pop()
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):  # a module also loads its packages' __init__
            path = module_file(".".join(parts[:depth]))
            if path is None or path in seen:
                continue
            seen.add(path)
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    pending += [a.name for a in node.names if a.name.startswith("handwriting")]
                elif isinstance(node, ast.ImportFrom) and node.module and \
                        node.module.startswith("handwriting"):
                    pending.append(node.module)
                    pending += [f"{node.module}.{a.name}" for a in node.names]
    return seen


def stage_module(stage: dict) -> str:
    return re.search(r"-m (handwriting[\w.]+)", stage["cmd"]).group(1)


def covered(path: Path, deps: list[str]) -> bool:
    relative = path.relative_to(REPO).as_posix()
    return any(relative == dep or relative.startswith(dep.rstrip("/") + "/") for dep in deps)


@pytest.mark.parametrize("name", sorted(PYTHON_STAGES))
def test_every_imported_package_file_is_a_dependency(name):
    stage = PYTHON_STAGES[name]
    files = imported_files(stage_module(stage))
    missing = sorted(p.relative_to(REPO).as_posix() for p in files
                     if not covered(p, stage.get("deps", [])))
    assert not missing, f"stage {name} imports {missing} but dvc.yaml does not list them"


def _section_types() -> dict[str, str]:
    """params.yaml's sections: the name of each one's record type (``Train``) -> its key."""
    import dataclasses

    from handwriting.params import Params

    return {str(f.type): f.name for f in dataclasses.fields(Params)}


def _rest_fields() -> dict[str, str]:
    """section.field of the fields that take a section's other keys (``train.sections``: one
    mapping per architecture, declared per stage instance as ``train.${item}``)."""
    import dataclasses

    from handwriting import params as module

    return {f"{section}.{f.name}": f"{section}.${{item}}"
            for kind, section in _section_types().items()
            if dataclasses.is_dataclass(record := getattr(module, kind, None))
            for f in dataclasses.fields(record) if f.metadata.get("rest")}


# Properties of Params that read several keys.
DERIVED = {"preprocessing": {"base.image_size", "preprocess.margin", "preprocess.max_pixels"}}


def params_read(files: set[Path]) -> set[str]:
    """The params keys the code in ``files`` reads, from the typed sections: ``params.<section>
    .<key>``; ``<name>.<key>`` where ``name`` holds a section (a function argument annotated
    with its record type, such as ``train: Train``, or ``name = params.<section>``); a
    section used whole in any other way (``vars(params.augment)``) reads all of it; a section
    passed on as an argument is read where the callee reads it."""
    types = _section_types()
    rest = _rest_fields()
    read: set[str] = set()
    for path in files:
        tree = ast.parse(path.read_text())
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        holders: dict[str, str] = {}  # a name holding a section -> the section
        for node in ast.walk(tree):
            if isinstance(node, ast.arg) and node.annotation is not None:
                annotation = ast.unparse(node.annotation).strip("'\"")
                for kind, section in types.items():
                    if re.fullmatch(rf"{kind}( \| None)?", annotation):
                        holders[node.arg] = section
            elif isinstance(node, ast.Assign) and len(node.targets) == 1 \
                    and isinstance(node.targets[0], ast.Name) \
                    and isinstance(node.value, ast.Attribute) \
                    and isinstance(node.value.value, ast.Name) \
                    and node.value.value.id == "params" and node.value.attr in types.values():
                holders[node.targets[0].id] = node.value.attr
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute):
                continue
            if isinstance(node.value, ast.Name) and node.value.id == "params":
                if node.attr in DERIVED:
                    read |= DERIVED[node.attr]
                    continue
                if node.attr not in types.values():
                    continue
                parent = parents.get(node)
                if isinstance(parent, ast.Attribute):
                    key = f"{node.attr}.{parent.attr}"
                    read.add(rest.get(key, key))
                elif isinstance(parent, ast.Call) and node in parent.args \
                        and not (isinstance(parent.func, ast.Name) and parent.func.id == "vars"):
                    continue  # passed on: read where the callee reads it
                elif isinstance(parent, ast.Assign):
                    continue  # held by a name: read where the name is read
                elif isinstance(parent, ast.Compare):
                    continue  # `params.export is None`: whether there is one
                else:
                    read.add(node.attr)
            elif isinstance(node.value, ast.Name) and node.value.id in holders:
                key = f"{holders[node.value.id]}.{node.attr}"
                read.add(rest.get(key, key))
    return read


@pytest.mark.parametrize("name", sorted(PYTHON_STAGES))
def test_every_param_read_is_declared(name):
    # The keys every file the stage imports reads (a helper's read counts for every stage
    # that imports it: declaring one too many reruns a stage needlessly, one too few skips it).
    stage = PYTHON_STAGES[name]
    declared = [p for p in stage.get("params", []) if isinstance(p, str)]
    read = params_read(imported_files(stage_module(stage)))
    foreach = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][name].get("foreach")
    if foreach is None:
        assert not {key for key in read if "${item}" in key}, \
            f"stage {name} reads one architecture's section but is not one per architecture"
    else:  # DVC expands the stage from its foreach key: each instance need not declare it
        read.discard(foreach.strip("${}"))
    undeclared = sorted(key for key in read
                        if not any(key == d or key.startswith(d + ".") for d in declared))
    assert read, f"found no params read by stage {name}; is the scan out of date?"
    assert not undeclared, f"stage {name} reads {undeclared} but dvc.yaml does not declare them"


def test_the_params_scan_follows_sections_into_helpers(tmp_path):
    helper = tmp_path / "helper.py"
    helper.write_text(
        "def choose(params, train: Train, tune: 'Tune | None'):\n"
        "    budget = params.export.compute_budget_mflops\n"
        "    settings = params.evaluate\n"
        "    pick(params.train, params.preprocessing, vars(params.augment))\n"
        "    ranges = AugmentSettings.from_params(params)\n"
        "    return train.sections[0], train.defaults, tune.spaces, tune.rungs, "
        "settings.ensemble\n")
    assert params_read({helper}) == {
        "export.compute_budget_mflops", "train.${item}", "train.defaults", "tune.${item}",
        "tune.rungs", "evaluate.ensemble", "base.image_size", "preprocess.margin",
        "preprocess.max_pixels", "augment"}
    # The example: evaluate reads the compute budget in evaluation/comparison.py.
    assert "export.compute_budget_mflops" in params_read(
        imported_files("handwriting.stages.evaluate"))


def test_the_import_scan_finds_indirect_imports():
    files = {p.relative_to(SRC).as_posix() for p in imported_files("handwriting.stages.raw")}
    assert {"handwriting/imaging.py", "handwriting/labels.py", "handwriting/__init__.py",
            "handwriting/synth/__init__.py"} <= files


@pytest.mark.parametrize("name", ["evaluate", "export"])
def test_model_deps_name_every_architecture(name):
    # These stages list models/<arch> one by one (not `models`, which holds export's own
    # output models/serving), so the list must follow train.architectures.
    archs = repo_params()["train"]["architectures"]
    model_deps = {dep for dep in STAGES[name]["deps"] if dep.startswith("models/")}
    assert model_deps == {f"models/{arch}" for arch in archs}


def test_no_stage_imports_another_stage():
    # A stage that imports another makes dvc.yaml rerun it whenever the other one changes;
    # shared code belongs in the package's core (models, evaluation, serving ...).
    import ast

    stages = sorted((REPO / "src" / "handwriting" / "stages").glob("*.py"))
    names = {path.stem for path in stages} - {"__init__"}
    for path in stages:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported = {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                imported = {a.name for a in node.names}
            else:
                continue
            others = {f"handwriting.stages.{name}" for name in names - {path.stem}}
            assert not imported & others, f"{path.name} imports {sorted(imported & others)}"


DVC_YAML = yaml.safe_load((REPO / "dvc.yaml").read_text())
TOP_PLOTS = DVC_YAML["plots"]


def _top_plot_files() -> list[str]:
    """Every file or folder the top-level plots draw (a file may come once per plot)."""
    files = []
    for entry in TOP_PLOTS:
        if isinstance(entry, str):
            files.append(entry)
            continue
        (name, spec), = entry.items()
        y = spec.get("y") if isinstance(spec, dict) else None
        files += list(y) if isinstance(y, dict) else [name]
    return files


def test_the_top_level_plots_cover_every_architecture():
    archs = repo_params()["train"]["architectures"]
    files = _top_plot_files()
    for arch in archs:
        for variant in ("untuned", "tuned"):
            history = f"plots/history/{arch}-{variant}.csv"
            assert files.count(history) == 2, f"{history}: accuracy and loss curves expected"
        assert f"plots/evaluate/roc/{arch}-tuned.csv" in files
    assert {"plots/evaluate/explain", "plots/evaluate/mistakes"} <= set(files)  # galleries
    histories = {f for f in files if f.startswith("plots/history/")}
    assert histories == {f"plots/history/{a}-{v}.csv" for a in archs
                         for v in ("untuned", "tuned")}, "a history of no architecture"


def test_no_file_is_drawn_both_as_a_stage_plot_and_a_top_level_plot():
    stage_plots = {next(iter(p)) if isinstance(p, dict) else p
                   for stage in STAGES.values() for p in stage.get("plots", [])}
    drawn = set(_top_plot_files())
    twice = {p for p in stage_plots if any(p.replace("${item}", a) in drawn
                                           for a in repo_params()["train"]["architectures"])}
    assert not twice, f"DVC would draw {sorted(twice)} twice"


def test_every_chart_has_a_title_and_axis_labels():
    for entry in TOP_PLOTS:
        if isinstance(entry, dict):
            (name, spec), = entry.items()
            assert {"title", "x_label", "y_label"} <= set(spec), f"plot {name!r}"
    for stage in STAGES.values():
        for plot in stage.get("plots", []):
            if isinstance(plot, dict):
                (name, spec), = plot.items()
                assert {"title", "x_label", "y_label"} <= set(spec), f"plot {name!r}"


def test_the_cross_dataset_folders_are_an_input_of_evaluate():
    # The folders are a list param: the crossdata stage fingerprints them on every repro and
    # evaluate depends on that file, so a changed, added or removed folder reruns evaluate.
    stage = STAGES["crossdata"]
    assert stage["always_changed"] is True and stage["params"] == ["evaluate.crossdata"]
    assert stage["outs"] == ["data/crossdata.json"]
    assert "data/crossdata.json" in STAGES["evaluate"]["deps"]
