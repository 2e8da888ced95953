"""Errors that the CLI turns into one line and a non-zero exit status.

Every problem a user can fix is raised as a :class:`CmaprofError` whose message names
the problem and the fix; the CLI prints ``cmaprof: error: <message>`` and exits with
:attr:`CmaprofError.exit_code`. Nothing deep in the code calls ``exit()``.
"""


class CmaprofError(Exception):
    """A problem with a clear message; ``exit_code`` is the process exit status."""

    exit_code = 1


class EnvironmentProblem(CmaprofError):
    """The machine cannot do what was asked (not root, no BCC, no headers, ...)."""

    exit_code = 1


class BadInput(CmaprofError):
    """A file or argument is wrong: corrupt, foreign or newer recording, bad format file."""

    exit_code = 2
