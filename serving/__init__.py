"""The OpenAI-compatible gateway: chat completions passed through to vLLM, feedback, hot swap."""
