"""persistent-notebooks, the container side: what keeps Jupyter work alive across disconnects,
server crashes and container restarts.

- kernels: a kernel provisioner whose kernels outlive the server, and a kernel manager that adopts
  them again under their old ids;
- keeper (+ keeperclient): a supervised process that keeps each kernel's output while no client
  is connected and shuts the kernels down when the container stops;
- connection: the kernel websocket that sends the kept output before live output;
- tmuxstate: the named tmux session, saved and rebuilt;
- logfilter: no token in the logs.

Jupyter is pointed at these by /etc/jupyter/jupyter_server_config.py; supervisord runs the rest.
"""

__version__ = "1.0.0"
