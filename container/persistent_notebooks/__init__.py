"""persistent-notebooks, the container side: what keeps Jupyter work alive across disconnects,
server crashes and container restarts. One subpackage per process, so that what runs where is plain:

- supervisor/  in supervisord's own process (its own Python, /opt/supervisor; the image's entrypoint):
               the container's start (supervisor.boot.prepare_container), supervisord with programs started
               at once, and the watchdog thread that heals a hung Jupyter or keeper and writes the
               health report Docker's healthcheck reads;
- server/      inside the Jupyter server (pointed at by /etc/jupyter/jupyter_server_config.py):
               kernels that outlive it and are adopted again, the kernel websocket that sends kept
               output first and coalesces streams, atomic saves, environments as kernelspecs, the
               sessions database repair, the token mask of its logs;
- keeper/      the kernel keeper (supervisord's `kernel-keeper`, running only while kernels do):
               each kernel's output while no client is connected (buffer.py, pure), kernels ended
               cleanly at container stop (its client, server/keeperclient.py, is the Jupyter server's:
               it starts the keeper before a kernel launches);
- tmux/        the named tmux session kept (`tmux-session`), saved (`tmux-saver`) and rebuilt;
- runner/      server-side notebook runs (`notebook-runner`, started on demand), and JupyterLab's cells
               followed until their outputs are in the notebook;
- cli/         `notebookctl`: the one-shot check, URL, token, attach, health, env, kernels, run, runs.

A process package imports only itself and the shared layers (tests/unit/test_layers.py holds it to that).
Shared by several: settings (the one place that reads and validates the environment), preflight (what
must hold before anything starts), paths (the state volume, and the one owner of each record in it),
state (the run records and the health report: one writer each, read by all), log and tmuxctl (the
line printed for people, tmux as every program asks it), wire (the keeper's protocol and the Jupyter
messages it signs), programs (supervisord asked to start a program on demand), environments (uv
environments and .venv folders found as kernels), jupyterapi (the running server's REST API, for
the CLI and the runner). settings, preflight, paths, state, log, wire, programs and
the supervisor subpackage use only the standard library (supervisord's Python has nothing else).

Inside every kernel (from the image's kernel library, whatever the kernel's Python): kernelstate (its
variables saved and restored across container restarts) and kernelmagic (`%run_on_server`).
"""

__version__ = "1.0.0"
