# persistent-notebooks: a named tmux session and a Jupyter server kept alive by supervisord
# under tini, as a non-root user whose uid/gid match the host user's (build args).
#
# BASE_IMAGE defaults to debian:trixie-slim; where no registry can be reached,
# scripts/make-base-image builds it from Debian's packages.
#
# Targets: the default (last) one is the single-user stack's image; `hub-user` is the base of each
# JupyterHub user's image (hub/compose.yaml builds it; the hub adds each user's uid on top).
ARG BASE_IMAGE=debian:trixie-slim

# What goes into the image as it is, gathered in a stage of its own: the project's step below copies it in, so that
# it costs no layer of its own (see that step).
FROM scratch AS files
COPY supervisord.conf /etc/persistent-notebooks/supervisord.conf
COPY --chmod=0755 container/healthcheck /usr/local/lib/persistent-notebooks/healthcheck
COPY container/tmux.conf /etc/tmux.conf
COPY container/jupyter_server_config.py /etc/jupyter/jupyter_server_config.py
COPY container/ipython/ /etc/ipython/
# JupyterLab asks nobody about news and fetches nothing from the internet by itself.
COPY container/labconfig/page_config.json /etc/jupyter/labconfig/page_config.json
COPY container/profile.sh /etc/profile.d/persistent-notebooks.sh
# The notebook user is added last (the final stage below, or the hub's layer per user), by this script.
COPY --chmod=0755 container/add-notebook-user /usr/local/sbin/add-notebook-user

# EXTRA_PIP_REQUIREMENTS' file (an empty one when unset), for the step that installs it to mount.
FROM scratch AS extra-requirements
ARG EXTRA_PIP_REQUIREMENTS=""
COPY ${EXTRA_PIP_REQUIREMENTS:-container/no-extra-requirements} /extra-requirements.txt

FROM ${BASE_IMAGE} AS runtime

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Each layer a step stores costs the engine a walk of the whole image on a storage driver without a native diff
# (fuse-overlayfs), so the steps are few, grouped by how often they change: the system (Debian's packages and
# supervisord), the notebook venv, then this project's own (its package, its files, the extras).
#
# The system. apt-install: apt-get install without recommends, trusting the build secret `ca_bundle` (the host's CA
# bundle, CA_BUNDLE, for TLS-intercepting proxies; a secret, so it lands in no layer). supervisord in a venv of its
# own, its version pinned in container/requirements-supervisor.txt. (Files the build only reads are mounted rather
# than copied.) /workspace is WORKDIR below (add-notebook-user gives it to the notebook user).
RUN --mount=type=secret,id=ca_bundle,required=false \
    --mount=type=bind,source=container/apt-install,target=/tmp/apt-install \
    --mount=type=bind,source=container/requirements-supervisor.txt,target=/tmp/requirements-supervisor.txt \
    /tmp/apt-install ca-certificates git less openssh-client passwd procps python3 python3-venv tini tmux \
    && tmux -V | awk '{ split($2, v, "."); if (v[1] + 0 < 3 || (v[1] + 0 == 3 && v[2] + 0 < 2)) { print "tmux 3.2+ needed for -D/-N, got " $0; exit 1 } }' \
    && mkdir /workspace \
    && python3 -m venv /opt/supervisor \
    && if [ -s /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi \
    && /opt/supervisor/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps \
        -r /tmp/requirements-supervisor.txt \
    && /opt/supervisor/bin/python -m pip uninstall --quiet --yes pip \
    && ln -s /opt/supervisor/bin/supervisord /opt/supervisor/bin/supervisorctl /usr/local/bin/

# The notebook environment: exact versions from container/requirements.txt. Its site-packages
# stay root-owned; with --system-site-packages the user site (PYTHONUSERBASE, in the state
# volume) is on, so `%pip install` from a notebook works and outlives the container. Installed by
# uv (container/requirements-uv.txt; pip installs it first), which fetches and compiles in parallel
# where pip goes one package at a time.
RUN --mount=type=secret,id=ca_bundle,required=false \
    --mount=type=bind,source=container/requirements.txt,target=/tmp/requirements.txt \
    --mount=type=bind,source=container/requirements-uv.txt,target=/tmp/requirements-uv.txt \
    python3 -m venv --system-site-packages /opt/venv \
    && if [ -s /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle SSL_CERT_FILE=/run/secrets/ca_bundle; fi \
    && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps -r /tmp/requirements-uv.txt \
    && UV_LINK_MODE=copy /opt/venv/bin/uv pip install --python /opt/venv/bin/python --no-cache --no-deps \
        --compile-bytecode -r /tmp/requirements.txt

# This project's own, in one step. Its files as they are (the files stage, mounted on folders the base image has
# empty, /srv and /mnt, so that no mount point is left behind). The container-side package
# (persistent_notebooks: one subpackage per process, see its __init__), with its entry points: jupyter_client finds
# the kernel provisioner by one, and `notebookctl` is another; installed into the notebook venv and, for the watchdog
# that runs inside supervisord, into supervisord's venv too (it needs nothing but the standard library there). Its
# build backend is pinned in container/pyproject.toml. The kernel library (kernel-lib): dill and the package again,
# for every kernel's Python (environments included) to save and load its variables; pure Python, imported by
# /etc/ipython/kernel_state.py.
# Then what extends the image without editing it (build arguments, set in .env, then `docker compose up -d --build`):
# Debian packages, and a requirements file at the top of the checkout installed into the notebook environment, our
# pins kept as constraints. After the slow steps, so that changing either rebuilds only this one.
ARG EXTRA_APT_PACKAGES=""
ARG EXTRA_PIP_REQUIREMENTS=""
# hadolint ignore=SC2086
RUN --mount=type=secret,id=ca_bundle,required=false \
    --mount=type=bind,source=container,target=/mnt \
    --mount=type=bind,from=files,target=/srv \
    --mount=type=bind,from=extra-requirements,source=/extra-requirements.txt,target=/tmp/extra-requirements.txt \
    cp -R --preserve=mode /srv/. / \
    && if [ -s /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi \
    && /opt/venv/bin/pip wheel --no-cache-dir --disable-pip-version-check --no-deps --wheel-dir /tmp/wheel /mnt \
    && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps /tmp/wheel/*.whl \
    && /opt/venv/bin/pip --python /opt/supervisor/bin/python install --no-cache-dir --disable-pip-version-check \
        --no-deps --no-compile /tmp/wheel/*.whl \
    && /opt/supervisor/bin/python -m compileall -q /opt/supervisor/lib \
    && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps \
        --target /opt/persistent-notebooks/kernel-lib -r /mnt/requirements-kernel.txt /tmp/wheel/*.whl \
    && ln -s /opt/venv/bin/notebookctl /usr/local/bin/notebookctl \
    && rm -rf /tmp/wheel \
    && if [ -n "${EXTRA_APT_PACKAGES}" ]; then /mnt/apt-install ${EXTRA_APT_PACKAGES}; fi \
    && if [ -n "${EXTRA_PIP_REQUIREMENTS}" ]; then \
        /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check \
            -c /mnt/requirements.txt -c /mnt/requirements-uv.txt -r /tmp/extra-requirements.txt; \
    fi

ENV PATH=/opt/venv/bin:$PATH \
    TMUX_TMPDIR=/var/lib/persistent-notebooks/tmux \
    JUPYTER_DATA_DIR=/var/lib/persistent-notebooks/jupyter/data \
    JUPYTER_RUNTIME_DIR=/var/lib/persistent-notebooks/jupyter/runtime \
    JUPYTER_CONFIG_DIR=/var/lib/persistent-notebooks/jupyter/config \
    IPYTHONDIR=/var/lib/persistent-notebooks/ipython \
    PYTHONUSERBASE=/var/lib/persistent-notebooks/python \
    SSL_CERT_FILE=/var/lib/persistent-notebooks/ca-bundle.pem \
    REQUESTS_CA_BUNDLE=/var/lib/persistent-notebooks/ca-bundle.pem \
    PIP_CERT=/var/lib/persistent-notebooks/ca-bundle.pem \
    CURL_CA_BUNDLE=/var/lib/persistent-notebooks/ca-bundle.pem \
    NODE_EXTRA_CA_CERTS=/var/lib/persistent-notebooks/ca-bundle.pem \
    UV_CACHE_DIR=/var/lib/persistent-notebooks/uv/cache \
    UV_PYTHON_INSTALL_DIR=/var/lib/persistent-notebooks/uv/python \
    SHELL=/bin/bash \
    LANG=C.UTF-8

# VSCode's settings for this container, in this one place: "Attach to Running Container" and
# "Reopen in Container" (.devcontainer.json) both read this label: remote user, extensions, and the
# tmux session as the default terminal (tasks and debuggers keep plain bash).
LABEL devcontainer.metadata="[{\"remoteUser\":\"notebook\",\"customizations\":{\"vscode\":{\"extensions\":[\"ms-python.python\",\"ms-toolsai.jupyter\"],\"settings\":{\"terminal.integrated.profiles.linux\":{\"tmux\":{\"path\":\"/usr/local/bin/notebookctl\",\"args\":[\"attach\"],\"icon\":\"terminal-tmux\"},\"bash\":{\"path\":\"/bin/bash\",\"args\":[\"-l\"],\"icon\":\"terminal-bash\"}},\"terminal.integrated.defaultProfile.linux\":\"tmux\",\"terminal.integrated.automationProfile.linux\":{\"path\":\"/bin/bash\"},\"python.defaultInterpreterPath\":\"/opt/venv/bin/python\"}}}}]" \
      org.opencontainers.image.title="persistent-notebooks"

WORKDIR /workspace
EXPOSE 8888
# A read of the watchdog's last report (a shell script of builtins; the watchdog inside supervisord probes
# every 5 s). Each check is a `docker exec`, which costs ~27 ms of CPU in the container (runc's init)
# whatever it runs: every 10 s that is 0.3 % of a core, every 3 s 0.9 %.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 CMD ["/usr/local/lib/persistent-notebooks/healthcheck"]
# Checks the settings, writes the token, then runs supervisord, in one Python (persistent_notebooks/supervisor).
ENTRYPOINT ["tini", "--", "/opt/supervisor/bin/python", "-m", "persistent_notebooks.supervisor"]

# A JupyterHub user's server: the same image with the hub's single-user server (jupyterhub-singleuser,
# the hub's version: hub/requirements-singleuser.txt). No user here: the hub builds one small layer per
# user on top, with that user's uid (hub/persistent_hub/images.py runs add-notebook-user).
FROM runtime AS hub-user
# (The image's SSL_CERT_FILE and friends name the state volume's bundle, not there at build time.)
RUN --mount=type=secret,id=ca_bundle,required=false \
    --mount=type=bind,source=hub/requirements-singleuser.txt,target=/tmp/requirements-singleuser.txt \
    unset SSL_CERT_FILE REQUESTS_CA_BUNDLE CURL_CA_BUNDLE PIP_CERT \
    && if [ -s /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi \
    && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps \
        -r /tmp/requirements-singleuser.txt

# The single-user stack (the default target). Last, so that another HOST_UID rebuilds only this small
# layer. The named volumes are initialised from these folders, with this ownership.
FROM runtime
ARG NB_UID=1000
ARG NB_GID=1000
RUN add-notebook-user "${NB_UID}" "${NB_GID}"
USER ${NB_UID}:${NB_GID}
