"""Check that this environment has every direct dependency of privfreq at its declared floor.

Run by ``make test-lowest`` in the venv built from ``constraints/lowest.txt``: fails when a
requirement in pyproject.toml (the core dependencies and the ``test`` extra, which is what
``make test-lowest`` installs; benchmark-only extras are not checked) has no ``>=`` floor or when the
installed version is not that floor (the constraints file and pyproject.toml disagree)."""
import sys
from importlib import metadata

from packaging.requirements import Requirement
from packaging.version import Version

errors = []
for text in metadata.requires("privfreq"):
    req = Requirement(text)
    if req.marker is not None and not req.marker.evaluate({"extra": "test"}):
        continue
    floors = [Version(s.version) for s in req.specifier if s.operator == ">="]
    if len(floors) != 1:
        errors.append(f"{req.name}: needs exactly one '>=' floor in pyproject.toml, got {text!r}")
        continue
    installed = Version(metadata.version(req.name))
    if installed != floors[0]:
        errors.append(f"{req.name}: floor {floors[0]}, installed {installed} "
                      f"(constraints/lowest.txt must pin it to the floor)")
    else:
        print(f"{req.name}=={installed}")
if errors:
    sys.exit("check_floors: " + "; ".join(errors))
