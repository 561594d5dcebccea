"""IPython kernel settings of persistent-notebooks (/etc/ipython/ipython_kernel_config.py).

Read by every IPython kernel in the container, the image's and every environment's: a user's own
profile config (IPYTHONDIR, in the state volume) is read after it and adds to it.
"""

c = get_config()  # noqa: F821 - provided by IPython when it loads this file
# The IOPub publisher queues for a subscriber that falls behind instead of dropping lines (iopub_queue.py); now,
# before the kernel makes its sockets.
exec(open("/etc/ipython/iopub_queue.py").read(), {})
# Printed output must not pile up in the kernel's memory (bounded_output_history.py). Run in a
# namespace of its own: nothing is added to the user's.
c.InteractiveShellApp.exec_lines.append(
    "exec(open('/etc/ipython/bounded_output_history.py').read(), {'get_ipython': get_ipython})")
# Each stream message at most ~1 MiB however fast a cell prints (bounded_stream_messages.py).
c.InteractiveShellApp.exec_lines.append("exec(open('/etc/ipython/bounded_stream_messages.py').read(), {})")
# %run_on_server: the rest of the notebook handed to the server's runner (run_on_server.py).
c.InteractiveShellApp.exec_lines.append(
    "exec(open('/etc/ipython/run_on_server.py').read(), {'get_ipython': get_ipython})")
# Variables saved after each cell and at a container stop, and loaded again when the container
# starts (kernel_state.py, persistent_notebooks.kernelstate).
c.InteractiveShellApp.exec_lines.append(
    "exec(open('/etc/ipython/kernel_state.py').read(), {'get_ipython': get_ipython})")
