"""The bad-input contract of every command line, as one assertion: a refused command writes one
line, ``error: ...``, to stderr (no traceback, no second line), and the caller checks its exit code."""


def one_error_line(stderr: str) -> str:
    """``stderr`` of a refused command, checked to be that one line; returned for message checks."""
    assert stderr.startswith("error: ") and stderr.count("\n") == 1 and "Traceback" not in stderr, stderr
    return stderr
