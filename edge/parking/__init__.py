"""Parking at the edge.

Device drivers, each the one owner of its line or port, an async context manager with an
explicit state and named tasks, handing out its events on an :class:`EventQueue`
(``edge/parking/events.py``):

- ``edge.parking.gate``: :class:`GateController`, barrier-gate controllers on serial lines;
- ``edge.parking.reader``: :class:`CardReader`, IC-card readers on serial lines;
- ``edge.parking.camera``: :class:`CameraReceiver`, the HTTP endpoint plate cameras push to.

Nothing is imported here, so modules of this package that need no device (pure parking
logic) do not pull in pyserial or uvicorn. Wire formats: protocols/PARKING-DEVICES.md.
"""
