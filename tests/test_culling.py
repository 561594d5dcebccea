"""Kernel culling: off by default (the point is persistence), and it works when configured."""

from __future__ import annotations

import json

from kernelclient import KernelConnection, list_kernels, start_kernel
from stack import Stack, wait_for


def test_idle_kernels_are_culled_when_configured(make_stack):
    """With JUPYTER_CULL_IDLE_TIMEOUT set, an idle kernel should be shut down by the server."""
    stack: Stack = make_stack(JUPYTER_CULL_IDLE_TIMEOUT="2", JUPYTER_CULL_INTERVAL="1")
    stack.up()
    stack.wait_healthy()
    token = stack.token()
    kernel_id = start_kernel(stack.base_url, token)
    with KernelConnection(stack.base_url, token, kernel_id) as connection:
        assert connection.execute("print(1)")["stdout"] == "1\n"
    wait_for(lambda: all(k["id"] != kernel_id for k in list_kernels(stack.base_url, token)), 60,
             "the idle kernel to be culled")


def test_cull_connected_on_reaches_jupyter_as_true(make_stack):
    """JUPYTER_CULL_CONNECTED=on, which the check takes for true, should reach Jupyter's config as true."""
    stack: Stack = make_stack(JUPYTER_CULL_CONNECTED="on")
    stack.up()
    stack.wait_healthy()
    shown = json.loads(stack.exec("jupyter-server", "--show-config-json").stdout)
    assert shown["MappingKernelManager"]["cull_connected"] is True, shown["MappingKernelManager"]
