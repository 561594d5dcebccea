"""State the processes share through files: the run records (runs.py) and the watchdog's health report (health.py).

Each file has one writer (the runner, the watchdog) and any number of readers; every process package may import
this layer, and it imports none of them.
"""
