"""MediaConduit Worker's provider SDK: what a provider repository imports. It never loads Celery or
Docker; ``transform`` (the producer API) is imported from the worker runtime on first use."""

import typing

from .assets import Asset, Audio, BinaryAsset, Image, Text, Video, guess_mime
from .capabilities import MediaCapability
from .chat import ChatOptions, cost_metadata, per_token_price, usage_metadata
from .deadline import time_left
from .errors import (
    BudgetExceededError,
    BudgetHeldError,
    ConfigurationError,
    InvalidInputError,
    ManifestError,
    MediaConduitError,
    MediaLimitError,
    PoisonJobError,
    ProviderExecutionError,
    ProviderHTTPError,
    ProviderLoadError,
    ProviderNotAllowedError,
    ProviderResponseError,
    ProviderSourceError,
    ReplayError,
    ReplicationError,
    RouteError,
    RouteUnavailableError,
    ServiceError,
    StreamBrokenError,
    TimeLimitError,
    TransientError,
    UnknownModelError,
)
from .http import HttpClient, parse_retry_after
from .media import FileBody, download, save_response
from .mediainfo import cap_error, check_media, image_format, media_caps
from .models import (
    AudioToAudioModel,
    AudioToTextModel,
    Chunk,
    ImageToImageModel,
    ImageToTextModel,
    Model,
    OutputStream,
    Progress,
    TextToAudioModel,
    TextToImageModel,
    TextToTextModel,
    TextToVideoModel,
    VideoToAudioModel,
    VideoToImageModel,
    VideoToVideoModel,
    input_asset,
    input_text,
    run_stream,
)
from .openai_compat import (
    OpenAICompatAPI,
    OpenAICompatChatModel,
    OpenAICompatImageModel,
    OpenAICompatProvider,
    OpenAICompatSpeechModel,
)
from .polling import poll_until
from .provider import DockerProvider, MediaProvider, ProviderModel, ProviderType, ServiceHost, ServiceInfo
from .record import TransformResult, create_generation_prompt
from .redaction import REDACTED, redact
from .remote import RemoteProvider

if typing.TYPE_CHECKING:
    from .worker.app import transform

__all__ = [
    "Asset",
    "Audio",
    "AudioToAudioModel",
    "AudioToTextModel",
    "BinaryAsset",
    "BudgetExceededError",
    "BudgetHeldError",
    "ChatOptions",
    "Chunk",
    "ConfigurationError",
    "DockerProvider",
    "FileBody",
    "HttpClient",
    "Image",
    "ImageToImageModel",
    "ImageToTextModel",
    "InvalidInputError",
    "ManifestError",
    "MediaCapability",
    "MediaConduitError",
    "MediaLimitError",
    "MediaProvider",
    "Model",
    "OpenAICompatAPI",
    "OpenAICompatChatModel",
    "OpenAICompatImageModel",
    "OpenAICompatProvider",
    "OpenAICompatSpeechModel",
    "OutputStream",
    "PoisonJobError",
    "Progress",
    "ProviderExecutionError",
    "ProviderHTTPError",
    "ProviderLoadError",
    "ProviderModel",
    "ProviderNotAllowedError",
    "ProviderResponseError",
    "ProviderSourceError",
    "ProviderType",
    "REDACTED",
    "RemoteProvider",
    "ReplayError",
    "ReplicationError",
    "RouteError",
    "RouteUnavailableError",
    "ServiceError",
    "ServiceHost",
    "ServiceInfo",
    "StreamBrokenError",
    "Text",
    "TextToAudioModel",
    "TextToImageModel",
    "TextToTextModel",
    "TextToVideoModel",
    "TimeLimitError",
    "TransformResult",
    "TransientError",
    "UnknownModelError",
    "Video",
    "VideoToAudioModel",
    "VideoToImageModel",
    "VideoToVideoModel",
    "cap_error",
    "check_media",
    "cost_metadata",
    "create_generation_prompt",
    "download",
    "guess_mime",
    "image_format",
    "input_asset",
    "input_text",
    "media_caps",
    "parse_retry_after",
    "per_token_price",
    "poll_until",
    "redact",
    "run_stream",
    "save_response",
    "time_left",
    "transform",
    "usage_metadata",
]


def __getattr__(name: str) -> typing.Any:
    """``transform`` pulls in Celery; provider code importing the SDK does not pay for it."""
    if name == "transform":
        from .worker.app import transform

        return transform
    raise AttributeError(f"module 'mediaconduit_worker' has no attribute {name!r}")
