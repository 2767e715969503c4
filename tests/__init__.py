"""facebridge tests: `make test` runs them all, `make test-fast` the numpy-only tier."""

import pytest

# the shared helpers' asserts explain a failure as a test's own do (registered before any imports them)
pytest.register_assert_rewrite("tests.factories", "tests.pair_targets", "tests.problems")
