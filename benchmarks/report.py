"""The printed table of the figures (Markdown): each measure with the stack, the floor and their ratio, so that a
reader sees what the stack costs beside a bare Jupyter server."""

from __future__ import annotations

import kernel_state
from harness import fmt
from runs import runs_rows


def table(r: dict) -> str:
    m, mem = r["machine"], r["memory"]
    lines = [
        f"persistent-notebooks benchmark{' (--quick)' if r['quick'] else ''}",
        f"machine: {m['platform']}, {m['cpus']} CPUs, {m['memory_gib']} GiB, Docker {m['docker']}",
        "",
        "| measure | stack | floor (bare jupyter server) | ratio |",
        "|---|---|---|---|",
        f"| command to first 200 | {fmt(r['startup_s']['stack_to_first_200'])} | "
        f"{fmt(r['startup_s']['floor_to_first_200'])} | {r['startup_s']['ratio_first_200']:.2f} |",
        f"| container start to first 200 | {fmt(r['startup_s']['stack_container_start_to_first_200'])} | "
        f"{fmt(r['startup_s']['floor_container_start_to_first_200'])} | "
        f"{r['startup_s']['ratio_container_start_to_first_200']:.2f} |",
        f"| ... of the command: the one-shot check (its start to the stack container's start) | "
        f"{fmt(r['startup_s']['check_container_start_to_stack_start'])} | | |",
        f"| ... of the check: its exit to the stack container's start (Compose polls a dependency every 500 ms) | "
        f"{fmt(r['startup_s']['check_container_exit_to_stack_start'])} | | |",
        f"| ... floor with JupyterLab (`jupyter lab`): command / container start to first 200 | | "
        f"{fmt(r['startup_s']['lab_floor_to_first_200'])} / "
        f"{fmt(r['startup_s']['lab_floor_container_start_to_first_200'])} | "
        f"{r['startup_s']['ratio_first_200_lab']:.2f} / "
        f"{r['startup_s']['ratio_container_start_to_first_200_lab']:.2f} |",
        f"| idle CPU of the whole container, no kernels ({r['idle_cpu_percent']['seconds']} s) | "
        f"{r['idle_cpu_percent']['stack']:.2f} % of a core | {r['idle_cpu_percent']['floor']:.2f} % | |",
        f"| start-up to healthy | {fmt(r['startup_s']['stack_to_healthy'])} | | |",
        f"| idle container memory | {mem['stack_container_mib']:.1f} MiB | {mem['floor_container_mib']:.1f} MiB | "
        f"{mem['stack_container_mib'] / mem['floor_container_mib']:.2f} |",
        f"| everything besides Jupyter (PSS / RSS) | {mem['besides_jupyter_pss_mib']:.1f} / "
        f"{mem['besides_jupyter_rss_mib']:.1f} MiB | 0 | |",
        f"| ... the kernel keeper, which runs only while kernels do (PSS / RSS) | "
        f"{mem['keeper_with_a_kernel']['pss_mib']:.1f} / {mem['keeper_with_a_kernel']['rss_mib']:.1f} MiB | | |",
        *[f"| container with {n} idle kernel(s) | {v:.1f} MiB | | |" for n, v in mem["with_kernels_mib"].items()],
        f"| one idle kernel | {mem['per_kernel_mib']:.1f} MiB | | |",
        f"| reconnect + trivial execute | {fmt(r['reconnect_s']['stack'])} | {fmt(r['reconnect_s']['floor'])} | "
        f"{r['reconnect_s']['ratio']:.2f} |",
        f"| executions per second, one websocket | {r['throughput_exec_per_s']['stack']:.0f} | "
        f"{r['throughput_exec_per_s']['floor']:.0f} | {r['throughput_exec_per_s']['ratio']:.2f} |",
        f"| executions per second, JupyterLab's cells (each handed to the runner first) | "
        f"{r['throughput_exec_per_s']['jupyterlab_cells']:.0f} | | with / without "
        f"{r['throughput_exec_per_s']['jupyterlab_ratio']:.2f} |",
        f"| executions per second, output kept while away off (NOTEBOOK_AWAY_BUFFER=0) | "
        f"{r['throughput_exec_per_s']['stack_without_away']:.0f} | | with / without "
        f"{r['throughput_exec_per_s']['away_ratio']:.2f} |",
        f"| replay of {r['away']['lines']} lines kept while away (one message each) | "
        f"{fmt(r['away']['replay_s'])} | | |",
        *(f"| burst of {r['burst']['lines']} one-message lines, {mode}: lines lost, stream messages "
          f"(per second at the client) | {r['burst'][f'stack_{mode}']['lost']}, "
          f"{r['burst'][f'stack_{mode}']['stream_messages']} ({r['burst'][f'stack_{mode}']['messages_per_s']:.0f}/s) | "
          f"{r['burst'][f'floor_{mode}']['lost']}, {r['burst'][f'floor_{mode}']['stream_messages']} "
          f"({r['burst'][f'floor_{mode}']['messages_per_s']:.0f}/s) | |" for mode in ("connected", "away")),
        *[f"| kill -9 of Jupyter -> {n} kernel(s) answering again | {fmt(v)} | "
          + (f"stock `jupyter lab` killed, started again at once -> first 200: "
             f"{fmt(r['floor_restart_s']['lab_killed_to_first_200'])} | "
             f"{r['floor_restart_s']['ratio_one_kernel_back']:.2f} |" if n == "1" else "| |")
          for n, v in r["kernels_back_after_kill_s"].items()],
        f"| heal: Jupyter killed -> API 200 | {fmt(r['healing_s']['jupyter_killed_to_200'])} | | |",
        f"| heal: tmux killed -> session back | {fmt(r['healing_s']['tmux_killed_to_session'])} | | |",
        f"| kill -9 of Jupyter, a kernel busy in a long cell: API back | "
        f"{fmt(r['busy_after_kill_s']['api_back_s'])} | | |",
        f"| ... then that kernel's websocket open | {fmt(r['busy_after_kill_s']['websocket_after_api_s'])} | | |",
        *(f"| workspace of {w['folders']:,} folders: one search; GET /api/kernelspecs meanwhile (max) | "
          f"{w['scan_s']:.2f} s; {fmt(w['kernelspecs_latency_s'])} (max {w['kernelspecs_max_s']:.2f} s) | | |"
          for w in r["workspace_scan"].values()),
        f"| kill -9 of the keeper holding {r['keeper_killed']['lines_kept']} lines: lines replayed, loss announced, "
        f"first message | {r['keeper_killed']['lines_replayed']}, {r['keeper_killed']['loss_announced']}, "
        f"{r['keeper_killed']['first_message_s']:.2f} s | | |",
        f"| tmux save, 5 windows x 10,000 lines: CPU of the save (a new process) / tmux server | "
        f"{fmt(r['tmux_save']['saver_cpu_ms'], 'ms')} / {fmt(r['tmux_save']['tmux_server_cpu_ms'], 'ms')} | | |",
        f"| tmux restore: kill-server -> session back / all scrollback shown | "
        f"{r['tmux_save']['restore_session_s']:.3f} s / {r['tmux_save']['restore_scrollback_s']:.3f} s | | |",
        f"| env create, one package ({r['env_create_s']['package']}): uv cache empty / warm | "
        f"{fmt(r['env_create_s']['cold'])} / {fmt(r['env_create_s']['warm'])} | | |",
        f"| notebookctl kernels, a kernel holding 200 MB: PSS / RSS (smaps_rollup: PSS / RSS) | "
        f"{r['kernels_list']['pss_mib']:.1f} / {r['kernels_list']['rss_mib']:.1f} MiB "
        f"({r['kernels_list']['smaps_pss_mib']:.1f} / {r['kernels_list']['smaps_rss_mib']:.1f}); "
        f"the command {r['kernels_list']['command_s']:.2f} s | | |",
        *runs_rows(r["runs"]),
        f"| image size (uncompressed) | {r['image']['total_mb']:.0f} MB | | |",
        "",
        "per process, idle (PSS / RSS MiB): " + ", ".join(
            f"{k} {v['pss_mib']:.1f} / {v['rss_mib']:.1f}" + (f" x{v['count']}" if v["count"] > 1 else "")
            for k, v in mem["processes"].items()),
        "image layers (MB): " + ", ".join(f"{k[:-3]} {v:.0f}" for k, v in r["image"].items() if k != "total_mb"),
    ]
    if r.get("kernel_state"):
        lines += ["", kernel_state.table(r["kernel_state"])]
    return "\n".join(lines)
