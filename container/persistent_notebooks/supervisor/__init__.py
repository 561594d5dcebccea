"""What runs inside supervisord's own process (its Python, /opt/supervisor): stdlib and supervisor only.

- __main__: supervisord itself, with programs due to (re)start started at once, and the watchdog;
- watchdog: heals a hung Jupyter or kernel keeper, hands a FATAL program to Docker, writes health;
- health: the watchdog's report, which Docker's healthcheck and `notebookctl health` read.
"""
