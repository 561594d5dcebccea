"""Save and load this kernel's variables across container restarts (persistent_notebooks.kernelstate).

Run in every IPython kernel by ipython_kernel_config.py, in a namespace of its own: dill and the
kernelstate module come from the image's kernel library, on sys.path only while they are imported,
so that an environment's own packages keep precedence.
"""


def _install_kernel_state(shell, lib="/opt/persistent-notebooks/kernel-lib"):
    import os
    import sys

    if "PERSISTENT_NOTEBOOKS_KERNEL_STATE" not in os.environ:
        return
    sys.path.insert(0, lib)
    try:
        import dill  # noqa: F401 - imported here, before any fork, from the kernel library
        from persistent_notebooks import kernelstate
    finally:
        sys.path.remove(lib)
    try:
        kernelstate.install(shell)
    except Exception as exc:  # noqa: BLE001 - a kernel without its saved state still starts
        print(f"persistent-notebooks: kernel state not available: {exc!r}", file=sys.__stderr__, flush=True)


_install_kernel_state(get_ipython())  # noqa: F821 - run by IPython, in a namespace of its own
