"""The layout the architecture promises: a scheme is named only in its own package and view
module (and by registries and experiment definitions), the engine imports neither the analysis,
the app, the command layer nor Streamlit, no import cycle hides behind a function-level import,
and the packages run outside a checkout."""

import ast
import io
import shutil
import subprocess
import sys
import tokenize
from pathlib import Path

from helpers import REPO, install, project
from lsmn_core.datasets import DATASETS
from lsmn_core.schemes import SCHEMES

PACKAGES = ("lsmn_core", "analysis", "app", "lsmn")
# registries, and experiment definitions that name schemes and data sets as data
MAY_NAME_SCHEMES = {"lsmn_core/schemes/__init__.py", "app/schemes/__init__.py", "lsmn/studies.py",
                    "lsmn/samples.py", "lsmn/bench.py", "lsmn/bench_pretrained.py",
                    "lsmn/bench_vectors.py", "lsmn/study_matrix_merges.py"}


def sources(*packages):
    for package in packages:
        for path in sorted((REPO / package).rglob("*.py")):
            yield path.relative_to(REPO).as_posix(), path.read_text()


def imports(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module


def test_no_scheme_is_named_outside_its_package_and_view():
    kinds = set(SCHEMES.names())
    loaded = [SCHEMES.get(kind) for kind in kinds]
    classes = {cls.__name__ for cls in loaded} | {cls.options_class.__name__ for cls in loaded}
    own = tuple(f"lsmn_core/schemes/{k}/" for k in kinds) + tuple(f"app/schemes/{k}.py" for k in kinds)
    found = []
    for name, text in sources(*PACKAGES):
        if name.startswith(own) or name in MAY_NAME_SCHEMES:
            continue
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            literal = token.type == tokenize.STRING and token.string.strip("'\"") in kinds
            if literal or (token.type == tokenize.NAME and token.string in classes):
                found.append(f"{name}:{token.start[0]}: {token.string}")
    assert not found, found


def test_no_data_set_is_named_outside_its_module():
    """A data set's name appears as a string only in its own module (the one its entry point names) and
    in experiment definitions; nothing in the engine, analysis or app branches on a data set's name."""
    modules = {name: DATASETS.claims(name)[0].target.split(":")[0].replace(".", "/") + ".py"
               for name in DATASETS.names()}
    found = []
    for source, text in sources(*PACKAGES):
        if source in MAY_NAME_SCHEMES:
            continue
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            name = token.string.strip("'\"")
            if token.type == tokenize.STRING and name in modules and modules[name] != source:
                found.append(f"{source}:{token.start[0]}: {token.string}")
    assert not found, found


def test_the_engine_stays_below_analysis_app_and_the_command_layer():
    for name, text in sources("lsmn_core"):
        roots = {module.split(".")[0] for module in imports(ast.parse(text))}
        assert not roots & {"analysis", "app", "lsmn", "streamlit"}, name
    for name, text in sources("analysis"):
        roots = {module.split(".")[0] for module in imports(ast.parse(text))}
        assert not roots & {"app", "lsmn", "streamlit"}, name


def run_time(tree: ast.Module) -> ast.Module:
    """A module without its `if TYPE_CHECKING:` blocks: imports there are for the type checker alone and
    never run, so they make no cycle."""
    type_only = ("TYPE_CHECKING", "typing.TYPE_CHECKING")
    tree.body = [node for node in tree.body if not (isinstance(node, ast.If) and ast.unparse(node.test) in type_only)]
    return tree


def test_no_import_cycle_and_no_function_level_import_of_the_project():
    trees = {name.removesuffix(".py").removesuffix("/__init__").replace("/", "."): run_time(ast.parse(text))
             for name, text in sources("lsmn_core", "analysis", "lsmn")}

    def targets(tree, top_level_only):
        """The project modules a module imports (`from a import b` imports a.b where that is a module)."""
        for node in tree.body if top_level_only else ast.walk(tree):
            if isinstance(node, ast.Import):
                yield from (a.name for a in node.names if a.name.split(".")[0] in PACKAGES)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module.split(".")[0] in PACKAGES:
                yield from (f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in trees else node.module
                            for a in node.names)

    graph = {}
    for module, tree in trees.items():
        graph[module] = set(targets(tree, top_level_only=True))
        assert set(targets(tree, top_level_only=False)) == graph[module], f"{module} imports the project in a function"

    acyclic = set()

    def visit(module, path):
        assert module not in path, " -> ".join([*path, module])
        if module not in acyclic:
            for target in graph.get(module, ()):
                visit(target, [*path, module])
            acyclic.add(module)

    for module in graph:
        visit(module, [])


def test_the_packages_run_outside_a_checkout(tmp_path):
    """Installed without the checkout (its packages and their metadata, as pip leaves them), the engine
    and the command train and show a run; only the commands that read the checkout's files need it."""
    site = tmp_path / "site"
    studio = project(REPO)
    install(site, studio["name"], studio["version"], studio["entry-points"])
    for package in ("lsmn_core", "analysis", "lsmn"):
        shutil.copytree(REPO / package, site / package, ignore=shutil.ignore_patterns("__pycache__"))
    work = tmp_path / "work"
    work.mkdir()
    (work / "run.yaml").write_text("name: outside\ntasks: [{name: parity, dataset: digits, target: parity}]\n"
                                   "model: {width: 16, depth: 1}\ntrain: {steps: 20, eval_every: 10, device: cpu}\n")
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}

    def lsmn(*args):
        return subprocess.run([sys.executable, "-m", "lsmn", *args], cwd=work, env=env, capture_output=True,
                              text=True)

    where = subprocess.run([sys.executable, "-c", "import lsmn, lsmn_core; print(lsmn_core.__file__, lsmn.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True)
    assert where.stdout.split() == [str(site / "lsmn_core" / "__init__.py"), str(site / "lsmn" / "__init__.py")]
    trained = lsmn("train", "run.yaml", "--out", "runs", "--quiet")
    assert trained.returncode == 0, trained.stderr
    run = Path(work / trained.stdout.split()[-1])
    shown = lsmn("show", str(run))
    assert shown.returncode == 0 and "parity" in shown.stdout, shown.stderr
    missing = lsmn("samples", "--only", "digits-hard", "--out", "samples")
    assert missing.returncode == 2 and "config file not found: configs/digits.yaml" in missing.stderr
