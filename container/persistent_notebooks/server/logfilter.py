"""A logging filter that masks the Jupyter token in every log line the server writes.

jupyter_server masks `token=` in its access log, but not Tornado's warning for a refused request,
which prints the whole URL. This filter sits on the console handler (jupyter_server_config.py).
"""

from __future__ import annotations

import logging
import re

from .. import paths

MASK = "[secret]"
TOKEN_PARAMETER = re.compile(r"(token=)[^&\s'\"]+", re.I)
AUTHORIZATION = re.compile(r"((?:Authorization|token)['\"]?\s*[:=]\s*['\"]?(?:token\s+)?)[^\s'\",}]+", re.I)


class MaskToken(logging.Filter):
    """Replaces the server's token wherever it stands in a log record."""

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        try:
            self.token = paths.SERVER_TOKEN_FILE.read_text().strip()
        except OSError:
            self.token = ""

    def mask(self, text: str) -> str:
        if self.token:
            text = text.replace(self.token, MASK)
        return AUTHORIZATION.sub(rf"\g<1>{MASK}", TOKEN_PARAMETER.sub(rf"\g<1>{MASK}", text))

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = self.mask(message)
        if masked != message:
            record.msg, record.args = masked, ()
        return True


def hub_log_request(handler) -> None:
    """Under JupyterHub, its access log (jupyterhub.log.log_request, which logs every success at info
    level) but for the watchdog's probe every 5 s (GET /user/NAME/api from 127.0.0.1), kept at debug."""
    from jupyterhub.log import log_request

    request = handler.request
    if (handler.get_status() == 200 and request.method == "GET" and request.remote_ip == "127.0.0.1"
            and request.path.endswith("/api")):
        handler.log.debug("200 GET %s (watchdog)", request.path)
        return
    log_request(handler)
