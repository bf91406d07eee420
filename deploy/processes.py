"""Child-process lifecycle shared by the local Kafka and PostgreSQL runners."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parent.parent
# The IPD-IMGT/HLA release for development, tests and CI: the handbook's copy beside the
# checkout (its licence forbids committing it). Production sets CELLBANK_HLA_REFERENCE.
DEV_HLA_REFERENCE = REPO_ROOT.parent / "shared" / "reference" / "ipd-imgt-hla" / "3.58.0"


def hla_reference_dir() -> str:
    """CELLBANK_HLA_REFERENCE if set, else the development copy ("" when there is none)."""
    configured = os.environ.get("CELLBANK_HLA_REFERENCE", "").strip()
    if configured:
        return configured
    return str(DEV_HLA_REFERENCE) if DEV_HLA_REFERENCE.is_dir() else ""


CACHE_DIR = Path(os.environ.get("CELLBANK_CACHE_DIR", REPO_ROOT / ".cellbank" / "cache"))


class InfraError(RuntimeError):
    """A local server could not be fetched, started or stopped; the message says why."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_port_block(count: int, host: str = "127.0.0.1", start: int = 20000) -> int:
    """The first port of `count` consecutive free ports, below the kernel's ephemeral range
    (where the clients' own sockets come and go), for services planned at base + offset."""
    for base in range(start, 32000 - count, count + 7):
        if all(_bindable(host, port) for port in range(base, base + count)):
            return base
    raise InfraError(f"no {count} consecutive free ports between {start} and 32000")


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def port_is_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def wait_until(
    condition: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.2
) -> None:
    """Poll condition until true or the deadline passes (then InfraError naming what)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise InfraError(f"timed out after {timeout:.0f}s waiting for {what}")


def stop_process(
    proc: subprocess.Popen[bytes],
    *,
    timeout: float,
    name: str,
    sig: signal.Signals = signal.SIGTERM,
) -> None:
    """Send sig (SIGTERM by default), wait up to timeout, then SIGKILL the process group."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"[cellbank] {name} did not stop within {timeout:.0f}s; killing it", flush=True)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


def log_tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def run_async(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync code, even when an event loop is running here
    (pytest-asyncio fixtures): then it runs on its own loop in a helper thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


OWNER_FILE = "owner.pid"


def claim(root: Path) -> None:
    """Record this process as the owner of a data folder (see reap_abandoned)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / OWNER_FILE).write_text(str(os.getpid()))


def reap_abandoned(parent: Path, pattern: str, *, remove: bool = True) -> list[Path]:
    """Stop servers left by owners that died without cleaning up (e.g. a SIGKILLed test run),
    and remove their folders (unless remove=False: data worth keeping). Folders whose owner
    still runs are left alone."""
    import shutil

    import psutil

    # Never this process nor its ancestors: a new owner naming the folder (`make run --root
    # DIR`) and whatever started it.
    spared = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    reaped = []
    for folder in parent.glob(pattern):
        owner_file = folder / OWNER_FILE
        try:
            owner = int(owner_file.read_text())
        except (OSError, ValueError):
            continue
        if psutil.pid_exists(owner):
            continue
        for proc in psutil.process_iter(["pid", "cmdline"]):
            if proc.pid in spared:
                continue
            if any(names_folder(part, folder) for part in proc.info["cmdline"] or ()):
                print(
                    f"[cellbank] stopping server abandoned in {folder} (pid {proc.pid})", flush=True
                )
                proc.kill()
        if remove:
            shutil.rmtree(folder, ignore_errors=True)
        reaped.append(folder)
    return reaped


def names_folder(part: str, folder: Path) -> bool:
    """Whether a command-line argument names the folder or a path inside it, also as an
    option's value (`-Dlogs=DIR/kafka`): whole path components, so `/x/.cellbank` names
    neither `/x/.cellbank-old` nor `/y/x/.cellbank`."""
    text = str(folder)
    start = part.find(text)
    while start != -1:
        end = start + len(text)
        if (end == len(part) or part[end] == os.sep) and (start == 0 or part[start - 1] in "=:,"):
            return True
        start = part.find(text, start + 1)
    return False
