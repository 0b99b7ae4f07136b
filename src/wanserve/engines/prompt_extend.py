"""Optional prompt rewriting through any OpenAI-compatible chat completions service.

Wan's own tooling expands short prompts into the detailed descriptions the models were
trained on. This is one short HTTP call; when it fails, the job goes on with the
client's prompt, because a worse prompt is better than a failed video.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import httpx
from pydantic_settings import BaseSettings, SettingsConfigDict

logger = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    "You rewrite prompts for an image-to-video model that animates from a given first "
    "frame to a given last frame. Expand the user's prompt into one vivid paragraph of at "
    "most 120 words: subject, motion, camera movement, lighting and style. Keep every "
    "detail the user gave, invent nothing that contradicts it, and answer with the "
    "rewritten prompt only, in the user's language."
)


class PromptExtendSettings(BaseSettings):
    """WANSERVE_PROMPT_EXTEND_* settings; the rewriter is off unless url and model are set."""

    model_config = SettingsConfigDict(env_prefix="WANSERVE_PROMPT_EXTEND_", extra="ignore")

    url: str | None = None  # base URL, e.g. http://127.0.0.1:8000/v1
    model: str | None = None
    api_key: str | None = None
    timeout: float = 10.0

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> PromptExtendSettings:
        """Options named `prompt_extend_<field>` first, then the environment."""
        prefix = "prompt_extend_"
        given = {k.removeprefix(prefix): v for k, v in options.items() if k.startswith(prefix)}
        return cls(**given)


class PromptExtender:
    """Rewrites a prompt with one chat completion; returns the original on any failure."""

    def __init__(
        self, settings: PromptExtendSettings, *, transport: httpx.BaseTransport | None = None
    ):
        if not settings.url or not settings.model:
            raise ValueError("prompt extension needs both a url and a model")
        headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        self.model = settings.model
        self._endpoint = settings.url.rstrip("/") + "/chat/completions"
        self._client = httpx.Client(timeout=settings.timeout, headers=headers, transport=transport)

    def extend(self, prompt: str, *, job_id: str) -> str:
        """The rewritten prompt, or `prompt` itself when the rewriter fails."""
        if not prompt.strip():
            return prompt  # nothing to expand: a text-only rewriter would only invent content
        body = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": prompt},
            ],
        }
        try:
            response = self._client.post(self._endpoint, json=body)
            response.raise_for_status()
            text = response.json()["choices"][0]["message"]["content"].strip()
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError, AttributeError):
            logger.warning(
                "job %s: prompt extension failed, using the prompt as given", job_id, exc_info=True
            )
            return prompt
        if not text:
            logger.warning(
                "job %s: prompt extension answered nothing, using the prompt as given", job_id
            )
            return prompt
        return text

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()


def prompt_extender(options: Mapping[str, Any]) -> PromptExtender | None:
    """A PromptExtender when url and model are configured, else None."""
    settings = PromptExtendSettings.from_options(options)
    if not settings.url or not settings.model:
        return None
    return PromptExtender(settings)
