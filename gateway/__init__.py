"""The inference gateway: OpenAI- and Adaptive-compatible chat completions that are
forwarded to the user's own model servers and logged to the interaction store."""
