from __future__ import annotations

import pytest

from protocols.profile import Profile, load_profiles


@pytest.fixture(scope="session")
def profiles() -> dict[str, Profile]:
    return load_profiles()
