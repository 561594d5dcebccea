"""%run_on_server in every IPython kernel (persistent_notebooks.kernelmagic), registered by
ipython_kernel_config.py in a namespace of its own: the module comes from the image's kernel library,
on sys.path only while it is imported."""


def _register_run_on_server(shell, lib="/opt/persistent-notebooks/kernel-lib"):
    import sys

    sys.path.insert(0, lib)
    try:
        from persistent_notebooks import kernelmagic
    finally:
        sys.path.remove(lib)
    shell.register_magic_function(kernelmagic.run_on_server, "line", "run_on_server")


_register_run_on_server(get_ipython())  # noqa: F821 - run by IPython, in a namespace of its own
