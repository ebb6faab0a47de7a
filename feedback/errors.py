"""The one error type of tao's HTTP APIs: raised anywhere a request is refused, answered in
OpenAI's shape, {"error": {"message", "type", "code", "param"}} (serving/errors.py installs
the handler). In feedback/ because the feedback API raises it too and cannot import serving.
"""
from __future__ import annotations


class OpenAIError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.headers = status, message, code, param, headers
