"""The models each demo application calls, with how often and how fast (ms per output token)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Model:
    provider: str  # gen_ai.provider.name (OTel GenAI well-known values)
    request: str
    response: str
    server: str
    ms_per_token: float
    reasoning: bool = False
    caching: bool = False


GENAI_MODELS: list[tuple[Model, float]] = [
    (Model("openai", "gpt-4o", "gpt-4o-2024-08-06", "api.openai.com", 14.0, caching=True), 0.32),
    (Model("openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18", "api.openai.com", 8.0, caching=True), 0.27),
    (Model("openai", "o3-mini", "o3-mini-2025-01-31", "api.openai.com", 9.0, reasoning=True), 0.10),
    (
        Model(
            "anthropic",
            "claude-3-5-sonnet-20241022",
            "claude-3-5-sonnet-20241022",
            "api.anthropic.com",
            16.0,
            caching=True,
        ),
        0.16,
    ),
    (
        Model("gcp.gemini", "gemini-1.5-flash", "gemini-1.5-flash-002", "generativelanguage.googleapis.com", 6.0),
        0.07,
    ),
    # self-hosted behind an OpenAI-compatible server: no price table knows it
    (
        Model("vllm", "acme-support-llama-3.1-8b", "acme-support-llama-3.1-8b", "llm.internal.acme.dev", 11.0),
        0.08,
    ),
]

OPENINFERENCE_MODELS: list[tuple[Model, float]] = [
    (
        Model("anthropic", "claude-3-5-sonnet-20241022", "claude-3-5-sonnet-20241022", "", 16.0, caching=True),
        0.5,
    ),
    (Model("openai", "gpt-4o", "gpt-4o-2024-08-06", "", 14.0), 0.3),
    (Model("google", "gemini-1.5-flash", "gemini-1.5-flash-002", "", 6.0), 0.2),
]

# OpenLLMetry's legacy instrumentations (vertexai, ollama) report gen_ai.system in their own spelling
OPENLLMETRY_MODELS: list[tuple[Model, float]] = [
    (Model("VertexAI", "gemini-1.5-flash", "gemini-1.5-flash-002", "", 6.0), 0.7),
    (Model("Ollama", "llama3.1:8b-instruct-q4_K_M", "llama3.1:8b-instruct-q4_K_M", "", 25.0), 0.3),
]
