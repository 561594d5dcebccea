"""Bound each stream message a kernel publishes (run in every IPython kernel, by ipython_kernel_config.py).

ipykernel's OutStream gathers writes and publishes them every 0.2 s however much that is, so a loop
printing flat out sends messages of tens of MB, each held whole, several copies at once, by the
kernel, Jupyter, the keeper and a server-side run. Here, once a stream holds LIMIT characters, the
write that got it there flushes: the writing thread waits for the kernel's IO thread to send them
(back-pressure), so no message is much over LIMIT (a single larger write still goes whole).
The hook is OutStream._schedule_flush, which write() calls after each write (write itself is
re-wrapped around every cell by IPython's output history). Leaves no name in the user's namespace.
Guarded by test_a_tight_print_loop_sends_bounded_messages (tests/test_every_line.py), which fails
if an ipykernel upgrade changes the hook.
"""


def _bound_stream_messages(limit=1 << 20):
    import sys

    def held(stream):
        with stream._buffer_lock:
            buffers = getattr(stream, "_buffers", None)  # ipykernel 7: one buffer per parent message
            if buffers is not None:
                return sum(buffer.tell() for buffer in list(buffers.values()))
            return stream._buffer.tell()  # ipykernel 6

    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        schedule = getattr(stream, "_schedule_flush", None)
        if schedule is None or not hasattr(stream, "_buffer_lock"):  # not ipykernel's OutStream
            continue

        def bounded_schedule(stream=stream, schedule=schedule):
            if held(stream) >= limit:
                stream.flush()
            else:
                schedule()

        stream._schedule_flush = bounded_schedule


_bound_stream_messages()
