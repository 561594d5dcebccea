"""The named tmux session: its keeper and its saver, supervised programs (__main__); tmux itself is asked
through ..tmuxctl."""
