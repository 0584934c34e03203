"""Checks an installed tfsmooth (from its wheel), run from a directory outside the checkout.

Usage: ``python check_installed.py CHECKOUT`` in a virtual environment where ``pip install
tfsmooth-*.whl`` ran. It fails (exit 1, one line per problem) unless:

- ``tfsmooth`` is imported from site-packages, not from ``CHECKOUT``;
- every subpackage and module of tfsmooth imports in this process's Keras flavour (under Keras 3,
  a module built on TFRS must instead refuse with the ImportError that says it needs tf-keras);
- the installed version is ``tfsmooth.__version__`` and the distribution carries the license file,
  ``py.typed``, the ``tfsmooth`` console script and the classifier of this Python.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import pathlib
import pkgutil
import sys


def main(checkout: str) -> int:
    problems = []
    import tfsmooth

    location = pathlib.Path(tfsmooth.__file__).resolve().parent
    if pathlib.Path(checkout).resolve() in location.parents:
        problems.append(f"tfsmooth was imported from the checkout ({location}), not the wheel")

    legacy = os.environ.get("TF_USE_LEGACY_KERAS") == "1"
    imported, refused = [], []
    for module in pkgutil.walk_packages(tfsmooth.__path__, prefix="tfsmooth."):
        if module.name.endswith(".__main__"):  # runs the command line; the demo run covers it
            continue
        try:
            importlib.import_module(module.name)
            imported.append(module.name)
        except ImportError as error:
            if not legacy and "needs tf-keras" in str(error):  # TFRS code under Keras 3
                refused.append(module.name)
            else:
                problems.append(f"import {module.name}: ImportError: {error}")
        except Exception as error:  # report every module that does not import, not the first
            problems.append(f"import {module.name}: {type(error).__name__}: {error}")

    distribution = importlib.metadata.distribution("tfsmooth")
    metadata = distribution.metadata
    if distribution.version != tfsmooth.__version__:
        problems.append(f"version {distribution.version} != __version__ {tfsmooth.__version__}")
    files = {str(path) for path in distribution.files or ()}
    if not any(name.endswith("licenses/LICENSE") for name in files):
        problems.append(f"no license file in the distribution: {sorted(files)[:5]}...")
    if not (location / "py.typed").exists():
        problems.append("no py.typed in the installed package")
    python = f"Programming Language :: Python :: {sys.version_info.major}.{sys.version_info.minor}"
    if python not in (metadata.get_all("Classifier") or []):
        problems.append(f"no classifier {python!r} for the Python this was tested on")
    scripts = [e.name for e in distribution.entry_points if e.group == "console_scripts"]
    if "tfsmooth" not in scripts:
        problems.append(f"no tfsmooth console script: {scripts}")

    flavour = "tf-keras" if legacy else "Keras 3"
    print(
        f"installed tfsmooth {distribution.version} from {location}: imported {len(imported)} "
        f"modules under {flavour}"
        + (f" ({', '.join(refused)} refused: needs tf-keras)" if refused else "")
        + f", {len(problems)} problems"
    )
    for problem in problems:
        print(f"  {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
