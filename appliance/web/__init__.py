"""The read-only status page, the JSON API and /metrics, served from a thread."""

from appliance.web.app import StateHolder, WebServer, create_app

__all__ = ["StateHolder", "WebServer", "create_app"]
