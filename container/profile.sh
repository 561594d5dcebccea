# shellcheck shell=sh
# /etc/profile.d/persistent-notebooks.sh: login shells (tmux windows, VSCode terminals) get the venv.
case ":$PATH:" in *:/opt/venv/bin:*) ;; *) PATH="/opt/venv/bin:$PATH" ;; esac
export PATH
# Shell history outlives the container, in the state volume.
export HISTFILE=/var/lib/persistent-notebooks/bash_history
# Under JupyterHub: the server's API token stays out of shells (docker exec, VSCode attached), as it
# stays out of kernels.
unset JUPYTERHUB_API_TOKEN JPY_API_TOKEN
