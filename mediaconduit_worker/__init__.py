"""MediaConduit Worker: the provider SDK, and (lazily) the producer API ``transform``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .assets import Asset, Audio, Image, Text, Video
from .capabilities import MediaCapability
from .errors import (
    InvalidInputError,
    ManifestError,
    MediaConduitError,
    ProviderExecutionError,
    ProviderLoadError,
    ProviderSourceError,
    ServiceError,
    TransientError,
    UnknownModelError,
)
from .models import (
    AudioToAudioModel,
    AudioToTextModel,
    ImageToImageModel,
    ImageToTextModel,
    Model,
    TextToAudioModel,
    TextToImageModel,
    TextToTextModel,
    TextToVideoModel,
    VideoToAudioModel,
    input_asset,
    input_text,
)
from .prompt import create_generation_prompt
from .provider import DockerProvider, MediaProvider, ProviderModel, ProviderType
from .results import TransformResult
from .chat import ChatOptions, cost_metadata, usage_metadata
from .errors import ConfigurationError
from .http import HttpClient, ProviderHTTPError, ProviderResponseError, parse_retry_after
from .openai_compat import (
    OpenAICompatAPI,
    OpenAICompatChatModel,
    OpenAICompatImageModel,
    OpenAICompatProvider,
    OpenAICompatSpeechModel,
)
from .remote import RemoteProvider

if TYPE_CHECKING:
    from .tasks import transform

__all__ = [
    "Asset", "Audio", "Image", "Text", "Video", "MediaCapability", "Model", "TextToTextModel",
    "TextToAudioModel", "TextToImageModel", "TextToVideoModel", "AudioToTextModel", "ImageToTextModel",
    "ImageToImageModel", "AudioToAudioModel", "VideoToAudioModel", "input_asset", "input_text",
    "create_generation_prompt", "DockerProvider", "MediaProvider", "ProviderModel", "ProviderType",
    "TransformResult", "transform", "MediaConduitError", "InvalidInputError", "ManifestError",
    "ProviderExecutionError", "ProviderLoadError", "ProviderSourceError", "ServiceError",
    "TransientError", "UnknownModelError",
]


__all__ += [
    "ConfigurationError", "ChatOptions", "cost_metadata", "usage_metadata", "HttpClient", "ProviderHTTPError",
    "ProviderResponseError", "parse_retry_after", "RemoteProvider", "OpenAICompatAPI", "OpenAICompatChatModel",
    "OpenAICompatImageModel", "OpenAICompatSpeechModel", "OpenAICompatProvider",
]


def __getattr__(name: str) -> Any:
    """``transform`` pulls in Celery; provider code importing the SDK does not pay for it."""
    if name == "transform":
        from .tasks import transform

        return transform
    raise AttributeError(f"module 'mediaconduit_worker' has no attribute {name!r}")
