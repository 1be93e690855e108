"""Every third-party module the package imports is a core dependency, so every command works
after the README's main install (``pip install -e .``, no extras)."""

import ast
import re
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("theory", "numerics", "validation")


def _core_dependencies() -> set[str]:
    text = (ROOT / "pyproject.toml").read_text()
    block = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M).group(1)
    names = re.findall(r'"([A-Za-z0-9_.\-]+)', block)
    return {re.sub(r"[-_.]+", "-", n).lower() for n in names}


def _imported_top_level_modules() -> set[str]:
    found = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    found |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m != "geomem"}


def test_every_imported_distribution_is_a_core_dependency():
    core = _core_dependencies()
    assert "scikit-dimension" in core and "tqdm" in core
    providers = metadata.packages_distributions()
    missing = {}
    for module in sorted(_imported_top_level_modules()):
        dists = {re.sub(r"[-_.]+", "-", d).lower() for d in providers.get(module, [])}
        # a module is covered when its distribution, or one that ships it, is a core
        # dependency (e.g. distributed via dask[distributed], threadpoolctl via scikit-learn)
        shipped_by_core = any(_requires(dep, module, providers) for dep in core)
        if not (dists & core) and not shipped_by_core:
            missing[module] = sorted(dists) or "not installed"
    assert not missing, f"imported but not core dependencies: {missing}"


def _requires(dependency: str, module: str, providers) -> bool:
    """Whether installing ``dependency`` installs the distribution providing ``module``."""
    try:
        requires = metadata.requires(dependency) or []
    except metadata.PackageNotFoundError:
        return False
    names = {re.sub(r"[-_.]+", "-", re.split(r"[ ;<>=!\[~(]", r, maxsplit=1)[0]).lower()
             for r in requires}
    wanted = {re.sub(r"[-_.]+", "-", d).lower() for d in providers.get(module, [])}
    return bool(names & wanted)
