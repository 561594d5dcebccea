"""supervisord's XML-RPC interface as the notebook user gets it (supervisord.conf's rpcinterface factory):
status, start, stop and restart of programs, and their logs; not the calls that would take the stack down
or change it (shutdown, reloadConfig, process groups, signals, stdin, clearing logs), which any kernel could
otherwise make through the socket, since it runs as the same user. The container stops by Docker's signal,
and a program stopped by hand is started again by the watchdog.
"""

from supervisor.rpcinterface import SupervisorNamespaceRPCInterface
from supervisor.xmlrpc import Faults, RPCError

REFUSED = ("shutdown", "restart", "reloadConfig", "addProcessGroup", "removeProcessGroup", "sendProcessStdin",
           "sendRemoteCommEvent", "signalProcess", "signalProcessGroup", "signalAllProcesses", "startAllProcesses",
           "stopAllProcesses", "startProcessGroup", "stopProcessGroup", "clearLog", "clearProcessLogs",
           "clearAllProcessLogs")


def _refuse(name: str):
    def refused(self, *args, **kwargs):
        raise RPCError(Faults.FAILED, f"{name} is not offered here (persistent-notebooks): the container stops "
                                      "with `docker compose stop`; restart a program with `supervisorctl restart NAME`")
    refused.__name__ = name
    return refused


class LimitedNamespace(SupervisorNamespaceRPCInterface):
    """supervisord's own namespace less the calls in REFUSED."""


for _name in REFUSED:
    setattr(LimitedNamespace, _name, _refuse(_name))


def make_main_rpcinterface(supervisord, **config):
    return LimitedNamespace(supervisord)
