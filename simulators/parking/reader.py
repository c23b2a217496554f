"""An IC-card reader on a pseudo-terminal, speaking protocols/parking/card.py.

    async with CardReaderSimulator(repeat_interval=0.02) as reader:
        open_port(reader.path)                # or reader.link
        await reader.present("A1B2C3D4")      # a tap: one frame
        await reader.hold("04A1B2C3D4E5F6", seconds=1.0)   # held: a frame every interval
        await reader.present("A1B2C3D4", bad_checksum=True)
        reader.inject_garbage()

Like readers in continuous mode, a card left in the field is reported again every
``repeat_interval`` seconds; the host must not count it twice.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from types import TracebackType
from typing import Self

from protocols.parking.card import CardFrame, CardType, encode, parse_uid
from simulators.parking.pty import PtyLine


class CardReaderSimulator:
    """One reader on its own pty; it only talks (whatever the host writes is ignored)."""

    def __init__(
        self,
        *,
        link: Path | None = None,
        repeat_interval: float = 0.3,
        seed: int = 0,
        name: str = "reader",
    ) -> None:
        self.name = name
        self.repeat_interval = repeat_interval
        self.frames_sent = 0
        self.bytes_ignored = 0  # written by the host
        self._rng = random.Random(seed)
        self._line = PtyLine(name, self._on_data, link)

    async def __aenter__(self) -> Self:
        await self._line.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._line.close()

    @property
    def path(self) -> str:
        return self._line.path

    @property
    def link(self) -> Path | None:
        return self._line.link

    async def present(
        self,
        uid: str | bytes,
        card_type: CardType = CardType.MIFARE_CLASSIC,
        *,
        bad_checksum: bool = False,
    ) -> None:
        """A card tapped: one frame. ``uid`` as bytes or hex; ValueError if not 4 or 7 bytes."""
        frame = CardFrame(card_type, uid if isinstance(uid, bytes) else parse_uid(uid))
        self._line.write(encode(frame, bad_checksum=bad_checksum))
        self.frames_sent += 1

    async def hold(
        self, uid: str | bytes, seconds: float, card_type: CardType = CardType.MIFARE_CLASSIC
    ) -> int:
        """A card left in the field for ``seconds``: a frame now and every interval after.

        Returns how many frames were sent.
        """
        count = 1 + int(seconds / self.repeat_interval)
        for i in range(count):
            if i:
                await asyncio.sleep(self.repeat_interval)  # the reader's own rhythm
            await self.present(uid, card_type)
        return count

    def inject_garbage(self, data: bytes | None = None) -> bytes:
        """Write ``data`` (default: 5 to 24 random bytes) on the line now; returns it."""
        noise = data if data is not None else self._rng.randbytes(self._rng.randint(5, 24))
        self._line.write(noise)
        return noise

    def unplug(self) -> None:
        self._line.unplug()

    def replug(self) -> None:
        self._line.replug()

    def _on_data(self, data: bytes) -> None:
        self.bytes_ignored += len(data)
