"""The world of tests/unit/test_federation_flow.py (three nodes on disk, a fake pipeline),
shared with the tests of the demo's node runs."""

from tests.unit.test_federation_flow import (  # noqa: F401  (fixtures)
    approved_digest,
    fake_pipeline,
    federation,
)
