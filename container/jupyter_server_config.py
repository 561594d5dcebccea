"""Jupyter server settings of persistent-notebooks (/etc/jupyter/jupyter_server_config.py).

The token, port and root directory are given on the command line by `notebookctl jupyter`;
here is what users tune through the environment (.env).
"""

import os

c = get_config()  # noqa: F821 - provided by Jupyter when it loads this file

# Kernel culling is off by default: keeping kernels alive while nobody is connected is the point.
c.MappingKernelManager.cull_idle_timeout = int(os.environ.get("JUPYTER_CULL_IDLE_TIMEOUT") or 0)
c.MappingKernelManager.cull_interval = int(os.environ.get("JUPYTER_CULL_INTERVAL") or 300)
c.MappingKernelManager.cull_connected = os.environ.get("JUPYTER_CULL_CONNECTED", "").lower() in ("1", "true", "yes")
c.MappingKernelManager.cull_busy = False
# Listening on 0.0.0.0 would switch Jupyter's Host-header check off; keep it on (DNS-rebinding
# protection). VSCode, a browser and SSH tunnels reach it as 127.0.0.1 or localhost, which pass.
c.ServerApp.allow_remote_access = False
