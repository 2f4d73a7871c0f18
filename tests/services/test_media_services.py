"""FFMPEG and Whisper in real containers on the offline base image, jobs through Redis to real workers:
audio out of a video with speech in it, then text out of that audio; a thumbnail read by OCR; every
audio format ffmpeg reads heard by Whisper; transcoding; bad media with ffmpeg's own message; the
job's deadline holding over a long ffmpeg run.

The test media are made here with the host's espeak-ng and ffmpeg (scripts/ci-setup.sh installs them).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import WorkerProcess

pytestmark = pytest.mark.docker
CAPABILITIES = ["video-to-audio", "audio-to-audio", "video-to-image", "video-to-video", "audio-to-text", "image-to-text"]
SENTENCE = "my name is john and i live in a small house near the river"
CAPTION = "MEDIACONDUIT 2026"
SPEECH = ["-v", "en-us+f2", "-s", "120"]


def host(*cmd: str) -> None:
    if shutil.which(cmd[0]) is None:
        pytest.fail(f"{cmd[0]} is not installed on this host (scripts/ci-setup.sh installs it)", pytrace=False)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)}: {proc.stderr[-2000:]}"


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    """speech.wav, caption.png, and talking.mp4: the caption on a test pattern with the speech as its sound."""
    from PIL import Image, ImageDraw, ImageFont

    folder = tmp_path_factory.mktemp("media")
    speech, caption, video = folder / "speech.wav", folder / "caption.png", folder / "talking.mp4"
    host("espeak-ng", *SPEECH, "-w", str(speech), SENTENCE)
    image = Image.new("RGB", (640, 120), "white")
    ImageDraw.Draw(image).text((30, 30), CAPTION, fill="black", font=ImageFont.load_default(size=56))
    image.save(caption)
    host("ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=10",
         "-i", str(caption), "-i", str(speech), "-filter_complex", "[0][1]overlay=0:240[v]", "-map", "[v]", "-map", "2:a",
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(video))
    return {"speech": speech, "caption": caption, "video": video, "folder": folder}


@pytest.fixture(scope="module")
def urls(provider_urls) -> dict[str, str]:
    return provider_urls


@pytest.fixture(scope="module")
def worker(urls):
    w = WorkerProcess(CAPABILITIES, concurrency=2).wait_ready()
    yield w
    w.stop()


def heard(text: str) -> list[str]:
    words = text.lower().split()
    return [w for w in SENTENCE.split() if w in words]


def test_speech_in_a_video_comes_back_as_text_with_every_step_in_the_prompt(worker, urls, media):
    from mediaconduit_worker import Video, transform

    video = Video.from_path(media["video"]).to_json()
    chain = transform.s(video, urls["ffmpeg"], "extract-audio", {"format": "wav", "sample_rate": 16000, "channels": 1}) \
        | transform.s(urls["whisper"], "whisper-stt", {"language": "en"})
    final = chain.delay().get(timeout=300)
    assert len(heard(final["asset"]["content"])) >= len(SENTENCE.split()) / 2, final["asset"]["content"]
    prompt = final["metadata"]["generation_prompt"]
    assert prompt["model_id"] == "whisper-stt" and prompt["input"]["type"] == "audio"
    step = prompt["input"]["metadata"]["generation_prompt"]
    assert step["model_id"] == "extract-audio" and step["service"]["id"] == "ffmpeg-service"
    assert step["options"] == {"format": "wav", "sample_rate": 16000, "channels": 1}
    assert step["input"]["type"] == "video" and step["input"]["sha256"] == video["sha256"]
    audio_meta = prompt["input"]["metadata"]
    assert audio_meta["probe"]["streams"][0]["sample_rate"] == "16000" and audio_meta["probe"]["streams"][0]["channels"] == 1
    assert {s["codec_type"] for s in audio_meta["source_probe"]["streams"]} == {"video", "audio"}


def test_thumbnail_of_the_video_is_read_by_ocr(worker, urls, media):
    from mediaconduit_worker import Video, transform

    chain = transform.s(Video.from_path(media["video"]).to_json(), urls["ffmpeg"], "thumbnail", {"at": 1, "width": 640}) \
        | transform.s(urls["tesseract"], "tesseract-ocr")
    final = chain.delay().get(timeout=300)
    assert CAPTION in final["asset"]["content"], final["asset"]["content"]
    thumb = final["metadata"]["generation_prompt"]["input"]
    assert thumb["mime_type"] == "image/png" and thumb["metadata"]["probe"]["streams"][0]["width"] == 640


@pytest.mark.parametrize("fmt,codec", [("mp3", "libmp3lame"), ("ogg", "libvorbis"), ("flac", "flac"),
                                       ("webm", "libopus"), ("m4a", "aac")])
def test_whisper_hears_any_audio_ffmpeg_reads(worker, urls, media, fmt, codec):
    from mediaconduit_worker import Audio, transform

    path = media["folder"] / f"speech.{fmt}"
    host("ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(media["speech"]), "-c:a", codec, str(path))
    audio = Audio.from_path(path)
    assert audio.mime_type != "audio/wav"
    result = transform.delay(audio.to_json(), urls["whisper"], "whisper-stt", {"language": "en"}).get(timeout=300)
    assert len(heard(result["asset"]["content"])) >= len(SENTENCE.split()) / 2, (fmt, result["asset"]["content"])


def test_convert_audio_and_transcode(worker, urls, media):
    from mediaconduit_worker import Audio, Video, transform
    from mediaconduit_worker.blobs import BlobStore

    mp3 = transform.delay(Audio.from_path(media["speech"]).to_json(), urls["ffmpeg"], "convert-audio",
                          {"format": "mp3", "sample_rate": 22050}).get(timeout=300)
    assert mp3["asset"]["mime_type"] == "audio/mpeg" and mp3["asset"]["metadata"]["probe"]["format"] == "mp3"
    assert mp3["asset"]["metadata"]["duration_s"] > 2
    back = transform.delay(mp3, urls["ffmpeg"], "convert-audio", {"format": "flac", "channels": 1}).get(timeout=300)
    assert BlobStore().get(back["asset"]["uri"])[:4] == b"fLaC"
    small = transform.delay(Video.from_path(media["video"]).to_json(), urls["ffmpeg"], "transcode",
                            {"format": "webm", "height": 120, "video_bitrate": "200k"}).get(timeout=300)
    assert small["asset"]["type"] == "video" and small["asset"]["mime_type"] == "video/webm"
    streams = {s["codec_type"]: s for s in small["asset"]["metadata"]["probe"]["streams"]}
    assert streams["video"]["codec_name"] == "vp8" and streams["video"]["height"] == 120
    assert streams["audio"]["codec_name"] == "opus"


def test_bad_media_fail_with_ffmpegs_own_message(worker, urls, media, tmp_path):
    from mediaconduit_worker import Audio, Video, transform

    text = tmp_path / "notes.mp4"
    text.write_text("this is plain text, labelled as a video\n" * 50)
    with pytest.raises(Exception) as err:
        transform.delay(Video.from_path(text).to_json(), urls["ffmpeg"], "extract-audio").get(timeout=300)
    assert type(err.value).__name__ == "ProviderHTTPError" and "Invalid data found when processing input" in str(err.value)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(media["video"].read_bytes()[: media["video"].stat().st_size // 3])
    with pytest.raises(Exception) as err:
        transform.delay(Video.from_path(cut).to_json(), urls["ffmpeg"], "thumbnail").get(timeout=300)
    assert "moov atom not found" in str(err.value), str(err.value)
    with pytest.raises(Exception) as err:
        transform.delay(Audio.from_path(media["speech"]).to_json(), urls["ffmpeg"], "convert-audio",
                        {"format": "aiff"}).get(timeout=300)
    assert "option 'format' of provider 'ffmpeg-docker-provider' model 'convert-audio' must be one of" in str(err.value)


def test_the_jobs_deadline_stops_a_long_ffmpeg_run(worker, urls, media):
    from mediaconduit_worker import Video, transform

    long = media["folder"] / "long.mp4"
    host("ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25",
         "-t", "300", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(long))
    started = time.monotonic()
    with pytest.raises(Exception) as err:
        transform.apply_async((Video.from_path(long).to_json(), urls["ffmpeg"], "transcode", {"height": 1440}),
                              soft_time_limit=8).get(timeout=120)
    assert "did not finish within the request's timeout" in str(err.value), str(err.value)
    assert time.monotonic() - started < 60
