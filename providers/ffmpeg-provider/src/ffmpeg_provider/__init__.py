"""ffmpeg in a Docker service: video to audio, audio to audio, video to image, video to video.

Media stream both ways: the input file is uploaded from the blob store in chunks and the result is
written back into it while it is hashed, so a worker's memory does not grow with the media. Stream
facts (ffprobe) of input and output land in the output's metadata as ``source_probe`` and ``probe``.
ffmpeg runs with the job's remaining time as its timeout, so a job's deadline holds, and with the
worker's media caps (``MEDIACONDUIT_MAX_MEDIA_SECONDS``, ``_MAX_MEDIA_PIXELS``, ``_MAX_OUTPUT_BYTES``),
which the service checks with ffprobe before it decodes anything.
"""

from __future__ import annotations

import json
import time
from typing import Any, ClassVar

from mediaconduit_worker import (
    Asset,
    Audio,
    AudioToAudioModel,
    BinaryAsset,
    DockerProvider,
    FileBody,
    Image,
    InvalidInputError,
    MediaCapability,
    Model,
    ProviderExecutionError,
    ProviderHTTPError,
    Video,
    VideoToAudioModel,
    VideoToImageModel,
    VideoToVideoModel,
    cap_error,
    input_asset,
    media_caps,
    save_response,
    time_left,
)

AUDIO_OPTIONS = ("format", "sample_rate", "channels")


class FfmpegModel(Model):
    """One ffmpeg operation of the service: ``POST /<model id>`` with the media as the body."""

    input_kind: ClassVar[type[BinaryAsset]] = Video
    output_kind: ClassVar[type[BinaryAsset]] = Audio
    options: ClassVar[tuple[str, ...]] = ()

    def transform(self, input: Any, options: dict[str, Any] | None = None) -> Asset:
        started = time.perf_counter()
        opts = dict(options or {})
        unknown = sorted(set(opts) - set(self.options))
        if unknown:
            raise InvalidInputError(f"ffmpeg model {self.id!r} has no option {unknown[0]!r} (options: {', '.join(self.options)})")
        media = input_asset(input, self.input_kind)
        assert isinstance(self.provider, FfmpegDockerProvider)
        left = time_left(default=self.provider.service_timeout) or 0.0
        if left < 1:
            raise ProviderExecutionError(f"ffmpeg {self.id}: the job's deadline has passed before ffmpeg could start")
        params = {k: str(v) for k, v in opts.items()} | {"timeout": f"{max(left - 1, 0.5):.1f}"} | media_caps()
        body = FileBody(media.path())
        try:
            response = self.provider.client().open_stream(
                "POST", f"/{self.id}", params=params, content=body, headers=body.headers(media.mime_type), timeout=left + 5)
        except ProviderHTTPError as exc:
            raise cap_error(exc, f"ffmpeg {self.id}") or exc from None
        probes = {"source_probe": _probe(response.headers.get("x-input-probe")),
                  "probe": _probe(response.headers.get("x-output-probe"))}
        output = save_response(response, self.output_kind, what=f"ffmpeg {self.id}", metadata=probes)
        if isinstance(output, Audio) and probes["probe"].get("duration"):
            output.metadata["duration_s"] = probes["probe"]["duration"]
        output.metadata["generation_prompt"] = self.generation_prompt(input, opts, started,
                                                                      service=self.provider.service_metadata())
        return output


def _probe(header: str | None) -> dict[str, Any]:
    try:
        value = json.loads(header or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class ExtractAudioModel(FfmpegModel, VideoToAudioModel):
    options = AUDIO_OPTIONS


class ConvertAudioModel(FfmpegModel, AudioToAudioModel):
    input_kind = Audio
    options = AUDIO_OPTIONS


class ThumbnailModel(FfmpegModel, VideoToImageModel):
    output_kind = Image
    options = ("at", "width")


class TranscodeModel(FfmpegModel, VideoToVideoModel):
    output_kind = Video
    options = ("format", "height", "video_bitrate")


class FfmpegDockerProvider(DockerProvider):
    model_classes = {
        MediaCapability.VIDEO_TO_AUDIO: ExtractAudioModel,
        MediaCapability.AUDIO_TO_AUDIO: ConvertAudioModel,
        MediaCapability.VIDEO_TO_IMAGE: ThumbnailModel,
        MediaCapability.VIDEO_TO_VIDEO: TranscodeModel,
    }
    service_timeout = 1800
