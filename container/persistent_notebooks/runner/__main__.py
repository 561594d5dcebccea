"""The notebook runner: runs a notebook's cells server-side, in its kernel, outputs into the file.

A program of supervisord's (`notebook-runner`), started on demand by `notebookctl run` and ending by
itself once it has had nothing to do for IDLE_EXIT seconds, so an idle stack pays nothing for it.
It talks to kernels directly over their ZeroMQ channels (the connection file in the kernel's record),
never through the Jupyter server: a run goes on through editor disconnects and through a crash, a
kill -9 or a hang of Jupyter. It sends one cell at a time, as an editor does, collects that cell's
IOPub messages into outputs as Jupyter's frontends do, and merges them by cell id into the notebook
file as it is on disk (nbfile), after every cell and every few seconds during a long one.

It owns the run records (runs/ID.json in the state volume): it creates, updates and prunes them
(finished runs are kept KEEP_FINISHED seconds); `notebookctl runs` only reads them.

Requests, on the private unix socket run/runner.sock (framed as ipc.py says): ping, start, stop, follow; each
reply {"ok": true, ...} or {"ok": false, "error": "..."}.

The code: kernel.py (a kernel's channels), run.py (one run), follow.py (JupyterLab's cells followed), service.py
(the socket, the records, resuming, the idle exit).
"""

import sys

from .service import main

if __name__ == "__main__":
    sys.exit(main())
