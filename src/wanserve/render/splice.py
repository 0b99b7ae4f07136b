"""A continued video: the source clip, then the engine's new part, on one time line.

An engine's new part starts on the clip's last frame (the image it was given), so that
frame is dropped from the new part and the clip's own last frame stands at the seam; the
new part is then held on its final frame or cut to last exactly the asked seconds. Sound
follows the picture: the clip's own track under the clip, the driving audio under the new
part.
"""

from __future__ import annotations

import itertools
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wanserve.engines.base import FrameStream, MediaInput
from wanserve.media.clip import has_audio, resampled_frames
from wanserve.render.encoder import AUDIO_RATE, AudioSource


@dataclass(frozen=True)
class Continued:
    """What the encoder needs for a continued video."""

    stream: FrameStream
    audio_path: Path | None
    duration: float  # seconds of the whole video


def splice(
    new_part: FrameStream,
    clip: MediaInput,
    *,
    size: tuple[int, int],
    driving_audio: MediaInput | None,
    seconds: float,
    work_dir: Path,
) -> Continued:
    """The clip followed by `seconds` of `new_part`, with the sound of each under it."""
    source_seconds = clip.duration or 0.0
    source_count = max(1, round(source_seconds * new_part.fps))
    new_count = max(1, round(seconds * new_part.fps))
    frames = itertools.chain(
        resampled_frames(clip.path, size, source_count), _after_seam(new_part.frames, new_count)
    )
    total = source_count + new_count
    share = source_count / total  # the clip's frames are encoded before the engine's work
    stream = FrameStream(
        fps=new_part.fps,
        frame_count=total,
        frames=frames,
        metadata={
            **new_part.metadata,
            # Beside the job's own `continuation` record (made at intake), not over it.
            "splice": {"source_frames": source_count, "new_frames": new_count},
        },
        progress_start=new_part.progress_start * (1 - share),
    )
    source_part = source_count / new_part.fps
    new_seconds = new_count / new_part.fps
    audio = _joined_audio(
        clip.path if has_audio(clip.path) else None,
        source_part,
        driving_audio.path if driving_audio else None,
        new_seconds,
        work_dir / "continued-audio.wav",
    )
    return Continued(stream, audio, source_part + new_seconds)


def _after_seam(frames: Iterator[np.ndarray], count: int) -> Iterator[np.ndarray]:
    """`count` frames after the seam frame: the last held, or the rest cut, to fit."""
    iterator = iter(frames)
    try:
        next(iterator, None)  # the seam frame: the clip's last frame stands there
        held = None
        for held in itertools.islice(iterator, count):
            yield held
            count -= 1
        if held is not None:
            for _ in range(count):
                yield held
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


def _joined_audio(
    source: Path | None, source_seconds: float, driving: Path | None, new_seconds: float, out: Path
) -> Path | None:
    """A 48 kHz stereo WAV: the clip's sound, then the driving audio (silence for either
    that is missing); None when neither is there."""
    if source is None and driving is None:
        return None
    parts = []
    for path, seconds in ((source, source_seconds), (driving, new_seconds)):
        count = round(seconds * AUDIO_RATE)
        if path is None:
            parts.append(np.zeros((2, count), dtype=np.float32))
            continue
        decoded = AudioSource(path)
        try:
            parts.append(decoded.read(count))
        finally:
            decoded.close()
    samples = np.clip(np.concatenate(parts, axis=1), -1.0, 1.0)
    pcm = (samples.T * 32767).astype("<i2")
    with wave.open(str(out), "wb") as file:
        file.setnchannels(2)
        file.setsampwidth(2)
        file.setframerate(AUDIO_RATE)
        file.writeframes(pcm.tobytes())
    return out
