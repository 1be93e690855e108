"""The README's tour runs as written (it is the first code a newcomer copies)."""

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_tour_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "README has no python tour"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)  # noqa: S102
    assert namespace["spec"].singular_values.shape == (4, 30)
    assert 0.0 < float(namespace["res"].sum_w2) < 1.0


#: the tour prints 3 significant digits
TOUR_RTOL = 5e-3
_PRINTED = re.compile(r"^(?P<expr>[^#=]+?)\s+#[^#]*:\s*(?P<value>[-+0-9.e, ()]+)$")


def test_readme_tour_prints_what_it_says():
    # every tour line of the form `expression  # what: value` evaluates to that value
    block = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)[0]
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102
    checked = 0
    for line in block.splitlines():
        match = _PRINTED.match(line.strip())
        if not match:
            continue
        got = eval(match["expr"], namespace)  # noqa: S307 - the README's own expression
        want = [float(v) for v in re.findall(r"[-+]?[0-9.]+(?:e[-+]?[0-9]+)?", match["value"])]
        got = np.ravel(np.asarray(got, dtype=float))
        np.testing.assert_allclose(got, want, rtol=TOUR_RTOL, err_msg=line)
        checked += 1
    assert checked >= 6


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_test_one():
    text = README.read_text()
    commands = re.findall(r"```bash\n(.*?)\n```", text, re.S)
    assert len(commands) == 2
    ci = (README.parent / ".ci" / "run").read_text()
    assert commands[1].strip() in ci
