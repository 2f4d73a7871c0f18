"""Errors that end a job with a message naming the culprit; none of them is worth a retry."""


class MediaConduitError(Exception):
    """Base class; permanent unless a subclass says otherwise."""


class ProviderSourceError(MediaConduitError):
    """A provider or service URL that cannot be fetched or is not allowed."""


class ManifestError(MediaConduitError):
    """A manifest that is missing, unparsable or has a field of the wrong type."""


class ProviderLoadError(MediaConduitError):
    """Provider code that cannot be installed or imported."""


class UnknownModelError(MediaConduitError, KeyError):
    """A model id the provider does not offer."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class InvalidInputError(MediaConduitError, ValueError):
    """A job input that is neither a string, an asset nor a TransformResult."""


class ConfigurationError(MediaConduitError):
    """A provider setting (API key, base URL) that is missing or wrong; the message names the variable."""


class ProviderExecutionError(MediaConduitError):
    """The provider's own code raised while transforming."""


class ServiceError(MediaConduitError):
    """A Docker service that cannot be built, started or made healthy."""


class TransientError(MediaConduitError):
    """Worth retrying with backoff: a restarting service, HTTP 429/5xx, a broker blip."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
