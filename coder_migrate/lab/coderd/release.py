"""Which primary a Coder release plays: the lab restarts the emulator with the version of the
primary's Deployment (its image tag), docs/coder-emulator.md "Following the primary's release".
"""

from __future__ import annotations

import re

from coder_migrate.lab.coderd.config import Mode
from coder_migrate.lab.coderd.core import ApiError

__all__ = ["mode_for_release"]

_VERSION_RE = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)(?:[-+][0-9A-Za-z.-]+)?$")
#: The v1 releases the emulator plays, by major.minor.
_V1_MODES: dict[tuple[int, int], Mode] = {(1, 20): "v1.20", (1, 21): "v1.21"}


def mode_for_release(current: Mode, version: str) -> tuple[Mode, str]:
    """The mode and the version header of a primary running *version*, in the generation the
    emulator runs now (a v1 emulator never turns into a v2 one); :class:`ApiError` 400 for a
    version it does not play.

    v1 versions are written as the images are tagged (``1.21.0``), v2 ones with a ``v``
    (``v2.15.0``), which is also how the real servers report them.
    """
    match = _VERSION_RE.match(version.strip())
    if match is None:
        raise ApiError(400, f"version {version!r} is not a release version like 1.21.0")
    major, minor = int(match.group(1)), int(match.group(2))
    plain = version.strip().removeprefix("v")
    if current.startswith("v1"):
        mode = _V1_MODES.get((major, minor))
        if mode is None:
            raise ApiError(
                400, f"the emulator plays Coder 1.20 and 1.21 as a v1 primary, not {plain}"
            )
        return mode, plain
    if major != 2:
        raise ApiError(400, f"the emulator plays Coder 2.x as a v2 primary, not {plain}")
    return current, f"v{plain}"
