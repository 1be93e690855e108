"""Test-suite configuration: hypothesis profiles.

The default profile is derandomized, so the suite (and CI) draws the same examples on every run
and a red run can be reproduced exactly. To search new random examples run
``pytest --hypothesis-profile=explore`` (randomized examples); pin what it finds with
``@example``.
"""

from hypothesis import settings

settings.register_profile("deterministic", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile("deterministic")
