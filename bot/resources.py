"""Where the shipped rules/, templates/ and db/ live, in a checkout or in a wheel."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def shipped_dir(name: str) -> Path:
    """Return the shipped folder `name` (rules, templates or db).

    A wheel carries them under bot/_data/; a checkout (editable install) has them at the
    top of the repository, beside the package.
    """
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"supportbot is installed without its {name}/ folder")
