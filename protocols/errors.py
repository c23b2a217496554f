"""The one error hierarchy shared by edge, hub and simulators.

Each class has one meaning; callers catch the narrowest one they can act on.
"""

from __future__ import annotations


class WuyeError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(WuyeError):
    """A profile, site config or settings file is wrong.

    ``source`` names the file and ``place`` the spot inside it (``points[3].address``),
    so the operator can fix it without reading code.
    """

    def __init__(self, source: str, place: str, problem: str) -> None:
        self.source = source
        self.place = place
        self.problem = problem
        where = f"{source}: {place}" if place else source
        super().__init__(f"{where}: {problem}")


class DecodeError(WuyeError):
    """Bytes or registers that cannot be turned into a value (or the reverse)."""


class MessageError(WuyeError):
    """An MQTT payload that does not follow the contract."""


class TransportError(WuyeError):
    """A link (serial line, TCP connection, broker) failed; the peer may be fine."""


class DeviceError(WuyeError):
    """A device answered wrongly or not at all: timeout, exception reply, bad frame."""
