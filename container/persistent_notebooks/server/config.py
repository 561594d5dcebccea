"""The Jupyter server's settings (/etc/jupyter/jupyter_server_config.py calls configure(c)).

supervisord runs `jupyter-server` with where to listen and serve on its command line (the port as the
entrypoint read it from settings): so `jupyter-server --show-config` and other Jupyter commands run by
hand in the container do not take the live server's port. The security settings come first; the
values users tune come from settings.py, which `notebookctl check` ran before the service started.
The config file fails closed: if anything here raises, the server exits rather than start without
these settings (open, or with a token of its own printed in the log).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from .. import paths, settings
from . import logfilter


def configure(c) -> None:
    # --- security ---------------------------------------------------------------------------------
    # Listening on 0.0.0.0 would switch Jupyter's Host-header check off; keep it on (DNS-rebinding
    # protection). VSCode, a browser and SSH tunnels reach it as 127.0.0.1 or localhost, which pass.
    token = paths.SERVER_TOKEN_FILE.read_text().strip()
    if settings.hub_mode():
        # A JupyterHub user's server (jupyterhub-singleuser): the hub's login and tokens replace ours.
        # Its API token reaches it here, from the private file, not from the environment (kernels and
        # terminals would inherit it). Requests come through the hub's proxy, under the hub's name.
        c.HubAuth.api_token = token
        c.ServerApp.allow_remote_access = True
        c.ServerApp.tornado_settings = {"log_function": logfilter.hub_log_request}
    else:
        c.ServerApp.allow_remote_access = False
        # The token, from a private file the entrypoint writes: not on the command line, not in the
        # environment (kernels and everything they start would inherit it).
        c.IdentityProvider.token = token
        # Login cookies are signed with a secret derived from the token: a new token ends old logins.
        if not paths.COOKIE_KEY_FILE.is_file():
            paths.write_private(paths.COOKIE_KEY_FILE, secrets.token_hex(32))
        c.ServerApp.cookie_secret = hmac.new(bytes.fromhex(paths.COOKIE_KEY_FILE.read_text().strip()),
                                             token.encode(), hashlib.sha256).digest()
    # No token in the logs (Tornado's warning for a refused request prints the whole URL).
    c.ServerApp.logging_config = {
        "filters": {"mask_token": {"()": "persistent_notebooks.server.logfilter.MaskToken"}},
        "handlers": {"console": {"filters": ["mask_token"]}},
    }

    # --- the browser UI ---------------------------------------------------------------------------
    # The URL (scripts/url: /?token=...) opens JupyterLab, as `jupyter lab` would.
    c.ServerApp.default_url = "/lab"
    # JupyterLab fetches nothing from the internet by itself: no news feed, no update check (the
    # news prompt is disabled too: /etc/jupyter/labconfig/page_config.json).
    c.LabApp.news_url = None
    c.LabApp.check_for_updates_class = "jupyterlab.handlers.announcements.NeverCheckForUpdate"

    # --- persistence -------------------------------------------------------------------------------
    # Kernels outlive the server and are adopted again under their ids; sessions (notebook <-> kernel)
    # are kept in the state volume; output printed while no client is connected is kept by the keeper.
    c.ServerApp.kernel_manager_class = "persistent_notebooks.server.kernels.PersistentMappingKernelManager"
    c.KernelProvisionerFactory.default_provisioner_name = "persistent-local-provisioner"
    c.ServerApp.kernel_websocket_connection_class = "persistent_notebooks.server.connection.KeptOutputConnection"
    # Stream output is coalesced into at most ~20 messages a second per client instead of dropped
    # (coalesce.py): no data-rate limit to drop text by. The message-rate limit stays, for floods of
    # other messages (displays).
    c.ZMQChannelsWebsocketConnection.iopub_data_rate_limit = 0
    c.SessionManager.database_filepath = str(paths.SESSIONS_DB)
    # Saves replace the file by rename: a crash mid-save leaves the old or the new file, never a truncated one.
    c.ServerApp.contents_manager_class = "persistent_notebooks.server.contents.AtomicFileContentsManager"
    # Every environment made with `notebookctl env create`, and every .venv with ipykernel under the
    # workspace, is offered as a kernel (and so in VSCode's kernel picker).
    c.ServerApp.kernel_spec_manager_class = "persistent_notebooks.server.kernelspecs.EnvironmentKernelSpecManager"
    # JupyterLab's terminals are windows of the named tmux session (lab-1, lab-2...), each shown through a view
    # of its own: their processes outlive Jupyter, and VSCode's terminal (the session itself) is not moved.
    c.TerminalsExtensionApp.terminal_manager_class = "persistent_notebooks.server.terminals.TmuxTerminalManager"
    c.ServerApp.terminado_settings = {"shell_command": ["/usr/local/bin/notebookctl", "terminal"]}

    # --- tuned through .env (settings.py; `notebookctl check` refused bad values before this runs) ----
    # Kernel culling is off by default: keeping kernels alive while nobody is connected is the point.
    c.MappingKernelManager.cull_idle_timeout = settings.cull_idle_timeout()
    c.MappingKernelManager.cull_interval = settings.cull_interval()
    c.MappingKernelManager.cull_connected = settings.cull_connected()
    c.MappingKernelManager.cull_busy = False
