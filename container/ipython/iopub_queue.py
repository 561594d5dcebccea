"""Let a kernel's IOPub publisher queue for a subscriber that falls behind (run in every IPython kernel, by
ipython_kernel_config.py, before the kernel makes its sockets).

ZeroMQ's publisher keeps at most SNDHWM (1,000) messages per subscriber and drops the rest, silently: a cell
printing a line per message faster than a subscriber reads (Jupyter stalled by a loaded machine, the keeper, a
server-side run) lost lines in the middle of its output. Here the IOPub socket is made with no such limit, as the
subscribers' own ends already are (RCVHWM 0); what it queues is bounded by how long a subscriber stalls (the
watchdog replaces a hung Jupyter, keeper or runner). The hook is IPKernelApp.init_iopub, given the context the
socket is made from. Guarded by test_a_stalled_jupyter_loses_no_line_printed_meanwhile (tests/test_every_line.py),
which fails if an ipykernel upgrade changes the hook. Leaves no name in the user's namespace.
"""


def _queue_iopub():
    try:
        import zmq
        from ipykernel.kernelapp import IPKernelApp
    except ImportError:
        return  # not an ipykernel
    init_iopub = getattr(IPKernelApp, "init_iopub", None)
    if init_iopub is None or getattr(init_iopub, "queues", False):
        return

    def queuing_init_iopub(self, context):
        context.setsockopt(zmq.SNDHWM, 0)  # a default for the sockets made from here on: the IOPub socket
        try:
            return init_iopub(self, context)
        finally:
            getattr(context, "sockopts", {}).pop(zmq.SNDHWM, None)  # (only the IOPub socket)

    queuing_init_iopub.queues = True
    IPKernelApp.init_iopub = queuing_init_iopub


_queue_iopub()
