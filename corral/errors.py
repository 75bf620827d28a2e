"""The few exception types corral raises; tasks turn each into one line and exit 1."""


class CorralError(Exception):
    """Base of every error corral reports to its user.

    The message is one line that names the offending input and how to fix it.
    """

    exit_code = 1


class ConfigError(CorralError):
    """The inventory (or another file the user edits) is not valid."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class ProviderMissing(CorralError):
    """The tool a provider drives (limactl, incus) is not installed or not usable."""


class ProviderError(CorralError):
    """The provider tool ran and failed; the message carries its own words."""


class MachineNotFound(CorralError):
    """A task named a VM that does not exist (or is not corral's)."""


class HostError(CorralError):
    """The host cannot do what was asked (wrong platform, not root, missing package)."""


class SecretError(CorralError):
    """A secret is missing, malformed or stored unsafely. Never carries the secret."""
