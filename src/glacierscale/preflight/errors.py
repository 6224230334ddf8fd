"""The one error a preflight raises: what is wrong, where, and the fix."""

from __future__ import annotations

from glacierscale.core.redact import redact


class PreflightError(ValueError):
    """A user error found before the run starts; the message names the culprit and the fix.

    ``field`` names the setting at fault (``aoi``, ``catalog``, ``collections``, ``model``,
    ``out``, ``config``, ``start``/``end``), so a CLI can point at its option.
    """

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(redact(message))
        self.field = field

    @property
    def message(self) -> str:
        """The redacted one- or two-line message."""
        return str(self.args[0])
