"""Where a job's files live: every storage key under `jobs/<job id>/`, and the file names.

Intake writes `media/`, the worker writes `output/` (the names the render pipeline gives
its files), the API serves them and expiry, delete and the orphan sweep remove them: all
of them spell the layout through this module only.
"""

from __future__ import annotations

from dataclasses import dataclass

JOBS_ROOT = "jobs/"


@dataclass(frozen=True)
class OutputFile:
    """One served output of a job: its file name and content type."""

    name: str
    content_type: str


OUTPUT_FILES = {
    "video": OutputFile("video.mp4", "video/mp4"),
    "thumbnail": OutputFile("thumbnail.webp", "image/webp"),
    "spritesheet": OutputFile("spritesheet.jpg", "image/jpeg"),
}
MEDIA_EXTENSIONS = {
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/bmp": ".bmp",
    "image/webp": ".webp",
    "audio/wav": ".wav",
    "audio/mpeg": ".mp3",
    "audio/aac": ".aac",
    "audio/mp4": ".m4a",
    "audio/flac": ".flac",
    "audio/ogg": ".ogg",
    "video/mp4": ".mp4",
    "video/quicktime": ".mov",
    "video/webm": ".webm",
}


def job_prefix(job_id: str) -> str:
    """Storage prefix of everything belonging to one job."""
    return f"{JOBS_ROOT}{job_id}/"


def media_key(job_id: str, media_type: str, content_type: str) -> str:
    """Storage key of one media input (`first_frame`, `first_clip`, ...)."""
    return f"{job_prefix(job_id)}media/{media_type}{MEDIA_EXTENSIONS.get(content_type, '.bin')}"


def output_prefix(job_id: str) -> str:
    """Storage prefix of a job's outputs (deleted when they expire)."""
    return f"{job_prefix(job_id)}output/"


def output_key(job_id: str, variant: str) -> str:
    """Storage key of one output variant (`video`, `thumbnail`, `spritesheet`)."""
    return f"{output_prefix(job_id)}{OUTPUT_FILES[variant].name}"


def job_id_of(key: str) -> str | None:
    """The job a storage key belongs to, or None for a key outside `jobs/<id>/`."""
    if not key.startswith(JOBS_ROOT):
        return None
    job_id, slash, _ = key.removeprefix(JOBS_ROOT).partition("/")
    return job_id if slash and job_id else None
