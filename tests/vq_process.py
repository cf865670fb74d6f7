"""`vq` commands for the tests, each a process of its own as a user starts it, without paying the
~3-5 s import of torch and its companions in every one of them (the largest cost of this suite,
which starts a hundred-odd commands).

One helper process (the "zygote", started on first use) imports the heavy third-party libraries
once, with vq's own warning filters set as `vq` sets them before anything heavy loads, and then
forks a child per command. The child takes the command's working directory, environment, argv,
stdin (/dev/null) and stdout/stderr (files, read back as `subprocess.run(..., text=True)` reads its
pipes), and runs `vq.cli.main` exactly as `python -m vq.cli.main` does (runpy, as `__main__`): vq's
own modules are imported afresh in every command, its exit code is the child's, an uncaught
exception prints its traceback as Python prints it. What the child skips is importing torch,
numpy, PIL, x_transformers, ... and that is all.

It steps aside, and the command runs as a plain `subprocess.run`, when:
- VQ_TEST_FRESH_PROCESSES=1 (every command then pays its own imports, as before);
- the command's environment differs from the zygote's in a variable those libraries read when
  they load (threads, Hugging Face offline switches, PYTHON*, ...), since a fork would keep the
  zygote's values;
- the imports printed anything on stderr under vq's filters (a warning a real `vq` would print on
  every command, which forked children would no longer show: the suite must see it);
- the zygote cannot be started or has died.
"""

import atexit
import json
import locale
import os
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import warnings
from pathlib import Path

# Loaded by every vq command that touches a model: ~95% of such a command's import time
# (torch itself, and torch._dynamo, sympy and einx through x_transformers). vq.cli.main, typer and
# rich load first, for vq's warning filters.
PRELOAD = ["numpy", "torch", "torch.nn.functional", "torchvision", "einops", "x_transformers", "safetensors.torch",
           "PIL.Image"]
# Read once, when those libraries load: a command whose value differs cannot be forked.
LOAD_TIME_ENV = ("OMP_", "MKL_", "OPENBLAS_", "KMP_", "GOMP_", "NUMEXPR_", "NPY_", "PYTORCH_", "TORCH", "CUDA", "HF_",
                 "HUGGINGFACE", "TRANSFORMERS", "PYTHON", "LD_", "MALLOC", "XDG_CACHE_HOME", "TERMINAL_WIDTH", "TYPER",
                 "_TYPER", "GITHUB_ACTIONS", "FORCE_COLOR", "PY_COLORS", "NO_COLOR")
# Read when used, not when the preloaded libraries load: TORCH_HOME (torch.hub.get_dir), and the Hub's
# telemetry switch, which Gradio sets in the test process itself when a studio is built there (the
# Hub client reads it when it loads, and the zygote does not load it).
LOAD_TIME_EXCEPT = {"TORCH_HOME", "HF_HUB_DISABLE_TELEMETRY"}

ZYGOTE = r'''
import os, sys, json, struct

def read_exact(fd, n):
    data = b""
    while len(data) < n:
        chunk = os.read(fd, n - len(data))
        if not chunk:
            return None
        data += chunk
    return data

def send(fd, obj):
    data = json.dumps(obj).encode()
    os.write(fd, struct.pack(">I", len(data)) + data)

def preload(names):
    """Import `names` under vq's own warning filters; return what that printed on stderr (fd 2)."""
    import importlib, tempfile
    importlib.import_module("vq.cli.main")  # its warning filters, as a real `vq` sets them first
    with tempfile.TemporaryFile() as log:
        saved = os.dup(2)
        os.dup2(log.fileno(), 2)
        try:
            for name in names:
                importlib.import_module(name)
            sys.stderr.flush()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        log.seek(0)
        printed = log.read().decode(errors="replace")
    # The child runs vq.cli.main as __main__, as `python -m` does: it must not be imported already.
    del sys.modules["vq.cli.main"]
    delattr(sys.modules["vq.cli"], "main")
    return printed

def serve(requests, replies):
    """Fork a child per request; the child returns the request, the zygote never returns."""
    while True:
        header = read_exact(requests, 4)
        if header is None:
            os._exit(0)
        request = json.loads(read_exact(requests, struct.unpack(">I", header)[0]))
        pid = os.fork()
        if pid == 0:
            os.close(requests)
            os.close(replies)
            return request
        send(replies, {"pid": pid})
        _, status = os.waitpid(pid, 0)
        send(replies, {"returncode": os.waitstatus_to_exitcode(status)})

def exit_code(e):
    """SystemExit's code as the interpreter turns it into an exit status."""
    if e.code is None:
        return 0
    if isinstance(e.code, int):
        return e.code
    print(e.code, file=sys.stderr)
    return 1

requests, replies = os.dup(0), os.dup(1)
printed = preload(json.loads(sys.argv[1]))
import atexit, gc, runpy, signal, threading
gc.collect()
gc.freeze()  # the children's collections leave the zygote's objects alone (and their pages shared)
threads = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else 1
send(replies, {"ready": True, "printed": printed, "threads": threads})
request = serve(requests, replies)

# The child: the command's own process from here on.
os.chdir(request["cwd"])
os.environ.clear()
os.environ.update(request["env"])
for fd, (path, flags) in enumerate(((os.devnull, os.O_RDONLY), (request["stdout"], os.O_WRONLY),
                                    (request["stderr"], os.O_WRONLY))):
    opened = os.open(path, flags)
    os.dup2(opened, fd)
    os.close(opened)
sys.argv = ["vq", *request["args"]]
sys.path[0] = os.getcwd()  # what `python -m` puts first
interrupted = False
try:
    runpy.run_module("vq.cli.main", run_name="__main__", alter_sys=True)
    code = 0
except SystemExit as e:
    code = exit_code(e)
except BaseException as e:  # uncaught: the traceback, as the interpreter prints it
    sys.excepthook(type(e), e, e.__traceback__)
    code, interrupted = 1, isinstance(e, KeyboardInterrupt)
# The interpreter's own exit, less the teardown of every module (which, in a fork, would copy
# the zygote's whole heap page by page): non-daemon threads joined, atexit handlers, stdio flushed.
threading._shutdown()
atexit._run_exitfuncs()
for stream in (sys.stdout, sys.stderr):
    try:
        stream.flush()
    except (OSError, ValueError):
        pass
if interrupted:  # as Python exits on an uncaught KeyboardInterrupt: killed by SIGINT
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)
os._exit(code & 0xFF)
'''


class Zygote:
    def __init__(self, env: dict):
        self.env = dict(env)
        self.proc = subprocess.Popen([sys.executable, "-c", ZYGOTE, json.dumps(PRELOAD)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=self.env,
                                     cwd=Path(__file__).resolve().parents[1])
        self.lock = threading.Lock()
        hello = self.receive()
        self.usable = bool(hello and hello.get("ready") and not hello["printed"].strip() and hello["threads"] == 1)
        if not self.usable:
            warnings.warn(f"vq_process: every vq command runs as a plain subprocess (the zygote said {hello})")
            self.close()

    def receive(self) -> dict | None:
        header = self.proc.stdout.read(4)
        body = self.proc.stdout.read(struct.unpack(">I", header)[0]) if len(header) == 4 else b""
        return json.loads(body) if body else None

    def forkable(self, env: dict) -> bool:
        def load_time(e):
            return {k: v for k, v in e.items() if k.startswith(LOAD_TIME_ENV) and k not in LOAD_TIME_EXCEPT}

        return self.usable and self.proc.poll() is None and load_time(env) == load_time(self.env)

    def run(self, args: list[str], cwd, env: dict, timeout: float) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "vq.cli.main", *args]
        with self.lock, tempfile.TemporaryDirectory(prefix="vq-command-") as tmp:
            out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
            out.touch()
            err.touch()
            request = {"args": args, "cwd": str(cwd), "env": env, "stdout": str(out), "stderr": str(err)}
            data = json.dumps(request).encode()
            try:
                self.proc.stdin.write(struct.pack(">I", len(data)) + data)
                self.proc.stdin.flush()
            except OSError:
                started = None
            else:
                started = self.receive()
            if started is None:  # the zygote is gone, and the command never started: run it plainly
                self.usable = False
                return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)
            timed_out = threading.Event()

            def kill():
                timed_out.set()
                os.kill(started["pid"], signal.SIGKILL)

            timer = threading.Timer(timeout, kill)
            timer.start()
            try:
                finished = self.receive()
            finally:
                timer.cancel()
            if finished is None:
                self.usable = False
                raise RuntimeError(f"the vq_process zygote died while running {command}")
            if timed_out.is_set():
                raise subprocess.TimeoutExpired(command, timeout)
            encoding = locale.getpreferredencoding(False)  # what subprocess's text mode decodes with

            def text(path: Path) -> str:  # and its universal newlines
                return path.read_bytes().decode(encoding).replace("\r\n", "\n").replace("\r", "\n")

            return subprocess.CompletedProcess(command, finished["returncode"], text(out), text(err))

    def close(self):
        self.proc.stdin.close()  # the zygote exits when its requests end
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


_zygote: Zygote | None = None


def run_vq(*args, cwd, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    """What `subprocess.run([python, -m, vq.cli.main, *args], capture_output=True, text=True, cwd=cwd,
    env=env, timeout=timeout)` returns, the process forked from the zygote where it can be."""
    global _zygote
    args = [str(a) for a in args]
    if os.environ.get("VQ_TEST_FRESH_PROCESSES", "") in ("", "0"):
        if _zygote is None:
            _zygote = Zygote(env)  # with the environment of the first command: the suite's
            atexit.register(_zygote.close)
        if _zygote.forkable(env):
            return _zygote.run(args, cwd, env, timeout)
    return subprocess.run([sys.executable, "-m", "vq.cli.main", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout)
