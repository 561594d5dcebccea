"""Bound what IPython keeps of printed output (run in every IPython kernel, by ipython_kernel_config.py).

IPython 9 copies every stdout/stderr write of a cell into `history_manager.outputs` (its
`InteractiveShell._tee`), in memory, for as long as the kernel lives: a cell that prints 5 MiB/s
grows its kernel by 5 MiB/s until the OOM killer ends it. Here each cell keeps the last TAIL
characters of each stream there (the end of the output, as `%notebook` would show it), and nothing
is lost anywhere else: the output still goes to the clients and to the kernel keeper.
Leaves no name in the user's namespace. Guarded by test_out_of_memory_takes_a_kernel_not_jupyter
(tests/test_survival.py): an IPython upgrade that keeps output some other way grows the kernel and
fails it.
"""


def _bound_output_history(shell, tail=64 * 1024):
    from collections import defaultdict

    class Tail(list):
        """A cell's stream writes, trimmed to the last `tail` characters (amortised: one join per trim)."""

        size = 0

        def append(self, text):
            super().append(text)
            self.size += len(text)
            if self.size > 2 * tail:
                kept = "".join(self)[-tail:]
                self[:] = [kept]
                self.size = len(kept)

    class Outputs(list):
        def append(self, output):
            bundle = getattr(output, "bundle", None)
            if isinstance(bundle, dict) and isinstance(bundle.get("stream"), list) \
                    and not isinstance(bundle["stream"], Tail):
                bundle["stream"] = Tail(bundle["stream"])
            super().append(output)

    history = getattr(shell, "history_manager", None)
    outputs = getattr(history, "outputs", None)
    if isinstance(outputs, dict):
        bounded = defaultdict(Outputs)
        for count, entries in outputs.items():
            bounded[count].extend(entries)
        history.outputs = bounded


_bound_output_history(get_ipython())  # noqa: F821 - run by IPython, in a namespace of its own
