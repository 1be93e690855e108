"""Package layering: geomem.theory imports neither torch nor the layers above it."""

import subprocess
import sys


def test_theory_imports_no_torch_and_no_upper_layer():
    code = ("import sys, geomem.theory; "
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith('torch.') "
            "or m.startswith('geomem.numerics') or m.startswith('geomem.validation')]; "
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == ""


def test_public_theory_contract_is_importable():
    import geomem.theory as theory
    from geomem.theory import (  # noqa: F401
        DDPM,
        VE,
        VP,
        LinearManifold,
        collapse_time,
        condensation_threshold,
        direction_condensation_times,
        freezing_parameter,
        phase_diagram,
        population_singular_values,
        predicted_singular_values,
    )

    assert all(hasattr(theory, name) for name in theory.__all__)
