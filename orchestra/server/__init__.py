"""`orchestra serve`: recipes behind an OpenAI-compatible HTTP API."""

from orchestra.server.app import ServeSettings, create_app
from orchestra.server.background import BackgroundServer

__all__ = ["BackgroundServer", "ServeSettings", "create_app"]
