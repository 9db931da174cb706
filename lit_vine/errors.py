"""The one error type for bad configuration values; ``lit-vine`` prints it without a traceback."""


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)
