"""What the collection's modules share: importing the coder_migrate engine.

The modules run the engine in the interpreter Ansible starts for them; when that is not the
one coder-migrate is installed in, the task fails with one line saying what to set.
"""

import sys

__all__ = ["engine_missing", "one_line"]


def engine_missing(error: ImportError) -> str:
    """The failure message when ``coder_migrate`` cannot be imported."""
    return (
        f"coder_migrate cannot be imported by {sys.executable} ({error}): set "
        "ansible_python_interpreter to the interpreter coder-migrate is installed in"
    )


def one_line(message: str) -> str:
    """An engine error may list one problem a line; Ansible shows msg best as one line."""
    return "; ".join(line.strip() for line in message.splitlines() if line.strip())

