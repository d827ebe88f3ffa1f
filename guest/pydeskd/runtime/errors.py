"""The runtime's errors. Each carries one line for the user; the CLI prints it and exits 1."""


class RuntimeFailure(Exception):
    """Base of every error pydesk-runc reports to its caller."""


class SpecError(RuntimeFailure):
    """config.json is malformed or asks for something this runtime cannot honour."""


class ContainerNotFound(RuntimeFailure):
    """No container with that id exists under the runtime's --root."""


class ContainerExists(RuntimeFailure):
    """A container with that id already exists."""


class IllegalState(RuntimeFailure):
    """The operation is not allowed in the container's current state (e.g. start twice)."""


class SetupFailed(RuntimeFailure):
    """Creating the container failed (a mount, cgroup, namespace or hook); nothing is left."""
