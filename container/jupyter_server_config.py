"""Jupyter server settings of persistent-notebooks (/etc/jupyter/jupyter_server_config.py).

What they are: persistent_notebooks/server/config.py. Jupyter skips a config file that raises, so
this one fails closed instead: if the settings cannot be applied (the token unreadable, the package
missing, a bad value), the server exits rather than start without them.
"""

import sys

c = get_config()  # noqa: F821 - provided by Jupyter when it loads this file
try:
    from persistent_notebooks.server.config import configure

    configure(c)
except Exception as exc:  # noqa: BLE001 - fail closed, whatever it was
    print(f"persistent-notebooks: cannot apply the Jupyter settings ({exc!r}); not starting without them",
          file=sys.stderr, flush=True)
    sys.exit(78)
