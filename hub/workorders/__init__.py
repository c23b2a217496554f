"""Work orders: the pure lifecycle (``lifecycle``); storage and API build on it."""
