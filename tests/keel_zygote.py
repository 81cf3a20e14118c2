"""A process that imports torch and torchkeel once, then forks a fresh child per ``keel``
command the tests run (the zygote pattern of Python's multiprocessing "forkserver").

Each command still runs in its own process, with its own working folder, argv, exit code,
stdout and stderr (files), exactly as ``python -m torchkeel ARGS`` would, minus the seconds of
importing torch that a new interpreter pays on every call: with ~190 CLI calls in the suite
that import was most of its time on two cores. Nothing here runs a torch operation before a
fork (an OpenMP pool started in the parent would not survive into the child).

Protocol, one JSON object per line: the tests send {"args", "cwd", "out", "err", "env"}; this
process answers {"pid"} once the child runs and {"returncode"} when it ends (negative: the
signal that ended it, as subprocess reports). End of input ends the zygote.
"""

from __future__ import annotations

import contextlib
import json
import os
import runpy
import sys
import traceback


def preload() -> None:
    """The modules every command imports, and those most of the suite's commands do."""
    import torch  # noqa: F401
    import torchvision  # noqa: F401

    import torchkeel.cli  # noqa: F401
    import torchkeel.train.loop  # noqa: F401


def child(request: dict) -> None:
    """Become ``python -m torchkeel ARGS`` in the request's folder, output to its files."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for fd, path, mode in (
        (0, os.devnull, os.O_RDONLY),
        (1, request["out"], os.O_WRONLY),
        (2, request["err"], os.O_WRONLY),
    ):
        target = os.open(path, mode)
        os.dup2(target, fd)
        os.close(target)
    sys.argv = ["-m", *request["args"]]  # runpy puts the module's path first, as `python -m` does
    code = 0
    try:
        runpy.run_module("torchkeel", run_name="__main__", alter_sys=True)
    except SystemExit as e:
        if e.code is None:
            code = 0
        elif isinstance(e.code, int):
            code = e.code
        else:  # sys.exit("message"): printed, exit status 1, as the interpreter does
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a closed or broken stream: nothing more to say
                stream.flush()
    os._exit(code)


def main() -> None:
    preload()
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    requests = sys.stdin
    for line in requests:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            replies.close()
            child(request)
        replies.write(json.dumps({"pid": pid}) + "\n")
        _, status = os.waitpid(pid, 0)
        returncode = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        replies.write(json.dumps({"returncode": returncode}) + "\n")


if __name__ == "__main__":
    main()
