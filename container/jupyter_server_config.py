"""Jupyter server settings of persistent-notebooks (/etc/jupyter/jupyter_server_config.py).

The port and root directory are given on the command line by `notebookctl jupyter`. The security
settings come first and read nothing from the environment, so no bad value can lose them; the
variables users tune were checked before the service started (`notebookctl check` refuses bad ones).
Jupyter skips a config file that raises, so this one fails closed instead: if anything here cannot
be done (the token unreadable, the package missing), the server exits rather than start without
these settings (open, or with a token of its own printed in the log).
"""

import hashlib
import hmac
import os
import secrets
import sys


def configure(c) -> None:
    from persistent_notebooks import paths

    # --- security ---------------------------------------------------------------------------------
    # Listening on 0.0.0.0 would switch Jupyter's Host-header check off; keep it on (DNS-rebinding
    # protection). VSCode, a browser and SSH tunnels reach it as 127.0.0.1 or localhost, which pass.
    c.ServerApp.allow_remote_access = False
    # The token, from a private file the entrypoint writes: not on the command line, not in the
    # environment (kernels and everything they start would inherit it).
    c.IdentityProvider.token = paths.SERVER_TOKEN_FILE.read_text().strip()
    # Login cookies are signed with a secret derived from the token: a new token ends old logins.
    _key_file = paths.RUN_DIR / "cookie-key"
    if not _key_file.is_file():
        paths.write_private(_key_file, secrets.token_hex(32))
    c.ServerApp.cookie_secret = hmac.new(bytes.fromhex(_key_file.read_text().strip()),
                                         c.IdentityProvider.token.encode(), hashlib.sha256).digest()
    # No token in the logs (Tornado's warning for a refused request prints the whole URL).
    c.ServerApp.logging_config = {
        "filters": {"mask_token": {"()": "persistent_notebooks.logfilter.MaskToken"}},
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
    c.ServerApp.kernel_manager_class = "persistent_notebooks.kernels.PersistentMappingKernelManager"
    c.KernelProvisionerFactory.default_provisioner_name = "persistent-local-provisioner"
    c.ServerApp.kernel_websocket_connection_class = "persistent_notebooks.connection.KeptOutputConnection"
    # Stream output is coalesced into at most ~20 messages a second per client instead of dropped
    # (coalesce.py): no data-rate limit to drop text by. The message-rate limit stays, for floods of
    # other messages (displays).
    c.ZMQChannelsWebsocketConnection.iopub_data_rate_limit = 0
    c.SessionManager.database_filepath = str(paths.SESSIONS_DB)
    # Saves replace the file by rename: a crash mid-save leaves the old or the new file, never a truncated one.
    c.ServerApp.contents_manager_class = "persistent_notebooks.contents.AtomicFileContentsManager"
    # Every environment made with `notebookctl env create`, and every .venv with ipykernel under the
    # workspace, is offered as a kernel (and so in VSCode's kernel picker).
    c.ServerApp.kernel_spec_manager_class = "persistent_notebooks.envs.EnvironmentKernelSpecManager"

    # --- tuned through .env (checked at start by `notebookctl check`) ------------------------------
    # Read so that no value can raise: an exception here would make Jupyter skip this whole file.


    def _seconds(name: str, default: int) -> int:
        value = os.environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
        if value:
            print(f"persistent-notebooks: {name}={value!r} is not a number of seconds; using {default}", flush=True)
        return default

    # Kernel culling is off by default: keeping kernels alive while nobody is connected is the point.
    c.MappingKernelManager.cull_idle_timeout = _seconds("JUPYTER_CULL_IDLE_TIMEOUT", 0)
    c.MappingKernelManager.cull_interval = _seconds("JUPYTER_CULL_INTERVAL", 300) or 300
    # The same words `notebookctl check` takes for true (it refuses anything else before this runs).
    c.MappingKernelManager.cull_connected = (os.environ.get("JUPYTER_CULL_CONNECTED", "").strip().lower()
                                             in ("1", "true", "yes", "on"))
    c.MappingKernelManager.cull_busy = False


c = get_config()  # noqa: F821 - provided by Jupyter when it loads this file
try:
    configure(c)
except Exception as exc:  # noqa: BLE001 - fail closed, whatever it was
    print(f"persistent-notebooks: cannot apply the Jupyter settings ({exc!r}); not starting without them",
          file=sys.stderr, flush=True)
    sys.exit(78)
