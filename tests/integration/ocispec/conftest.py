from tests.support.runtime_fixtures import _subreaper, rootfs_template  # noqa: F401
