from tests.hub.property.conftest import sites  # noqa: F401 (fixture: sites s1 and s2)
from tests.hub.property.test_property_api import api  # noqa: F401 (fixture: staff, owners, app)
