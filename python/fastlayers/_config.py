"""Strict mode and the one-time fallback warning.

A configuration a kernel does not cover (a dtype, a device) runs torch's own
implementation with a warning, once per (op, reason). In strict mode it raises instead, so
a fallback never hides a missing kernel; the test suite runs strict.
"""

import os
import warnings

_strict = os.environ.get("FASTLAYERS_STRICT", "0") not in ("", "0", "false", "False")
_warned: set = set()


class FallbackWarning(UserWarning):
    """fastlayers ran torch's implementation because no kernel covers the inputs."""


def set_strict(strict: bool = True) -> None:
    """Raise instead of falling back to torch when no fastlayers kernel covers the inputs."""
    global _strict
    _strict = bool(strict)


def is_strict() -> bool:
    return _strict


def fallback(op: str, reason: str) -> None:
    """Called before running torch's implementation of `op` because of `reason`."""
    if _strict:
        raise RuntimeError(f"fastlayers.{op}: no kernel for {reason} (strict mode; torch fallback disabled)")
    if (op, reason) not in _warned:
        _warned.add((op, reason))
        warnings.warn(
            f"fastlayers.{op}: no kernel for {reason}; running torch's implementation instead",
            FallbackWarning,
            stacklevel=3,
        )
