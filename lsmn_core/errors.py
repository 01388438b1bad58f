"""User-facing errors: the CLI prints their message as one line and exits 2, the app shows it."""


class LsmnError(Exception):
    """Base class for problems caused by input (config, data, run files), not by bugs."""


class ConfigError(LsmnError):
    """A config file or override is invalid."""


class DataError(LsmnError):
    """A data set is missing or malformed."""


class RunError(LsmnError):
    """A run directory is missing, incomplete or corrupt."""


class RoutingError(LsmnError):
    """An edited routing does not fit the run it is applied to."""


class TrainingError(LsmnError):
    """Training cannot go on: the loss stopped being a finite number."""


class MissingModuleError(ConfigError):
    """A user's module that a config or run names (a block class) cannot be imported; what a run
    stored can still be shown without it."""
