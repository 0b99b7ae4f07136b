"""wanserve: first + last frame (+ driving audio) to video, behind an OpenAI-compatible API."""

__version__ = "0.1.0"
