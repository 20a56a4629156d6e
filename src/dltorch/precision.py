"""`precision: auto` decided by measuring, not by a CPU flag.

A CPU that reports avx512_bf16 may still run a bf16 training step slower than fp32 (a 2-core Xeon did: 1,535 vs 1,888
images/s), and one without it emulates bf16 many times slower. So before training, the engine times a few
forward/backward steps of the actual model on an actual batch in both precisions and keeps bf16 only where it is
clearly faster. The verdict is cached per machine (CPU or GPU model, threads, torch version) and per model (the
parameters' shapes and the batch's shape), so a rerun or a resumed run trains in the same precision without
measuring again. A verdict measured while other processes took CPU time decides this run only: it is not cached,
as it would otherwise stand for every later run on a quiet machine.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dltorch.io import read_json, write_json

log = logging.getLogger(__name__)

# bf16 must save at least this fraction of the fp32 step time: a tie is noise, and fp32 is the exact one
MIN_SAVING = 0.10
WARMUP_STEPS = 2  # oneDNN picks and caches its kernels on the first calls
TIMED_STEPS = 5
CACHE_ENV = "DLTORCH_CACHE_DIR"
# Other processes' CPU time during the measurement, in cores, above which its verdict is not cached. Measured over
# at least MIN_WINDOW_S, as /proc/stat counts in ticks of 10 ms.
MAX_OTHERS_CORES = 0.25
MIN_WINDOW_S = 0.5

Step = Callable[[nn.Module, str], None]  # one forward/backward of a model in a precision ("fp32" | "bf16")


@dataclass(frozen=True)
class Verdict:
    precision: str  # "fp32" or "bf16"
    fp32_ms: float  # the median step time of each
    bf16_ms: float
    cached: bool = False
    others_cores: float = 0.0  # CPU other processes used while it was measured

    @property
    def contended(self) -> bool:
        return self.others_cores > MAX_OTHERS_CORES

    def describe(self) -> str:
        source = "cached" if self.cached else "measured"
        if self.contended:
            source += f" while other processes used {self.others_cores:.2f} cores, so not cached"
        return (f"precision auto -> {self.precision} ({source}: fp32 {self.fp32_ms:.1f} ms/step, "
                f"bf16 {self.bf16_ms:.1f} ms/step)")


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast (no loss scaling needed, unlike fp16) where the precision is bf16; fp32 runs as written."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def decide(fp32_ms: float, bf16_ms: float) -> str:
    return "bf16" if bf16_ms <= (1 - MIN_SAVING) * fp32_ms else "fp32"


def cache_file() -> Path:
    root = os.environ.get(CACHE_ENV) or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dltorch"
    return Path(root) / "precision.json"


def machine(device: torch.device) -> str:
    """What a step time depends on besides the model: the processor, the threads torch uses, torch itself."""
    if device.type == "cuda":
        chip = torch.cuda.get_device_name(device)
    else:
        chip = _cpu_model()
    return f"{chip}|{device.type}|threads={torch.get_num_threads()}|torch={torch.__version__}"


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def model_key(model: nn.Module, batch_shape: tuple[int, ...]) -> str:
    shapes = [(name, tuple(p.shape)) for name, p in model.named_parameters()]
    return hashlib.sha256(json.dumps([shapes, list(batch_shape)]).encode()).hexdigest()[:16]


def measure(step: Step, model: nn.Module) -> dict[str, float]:
    """Median milliseconds of one step in each precision, on a copy of the model with the global RNG restored, so
    the run that follows is the one it would have been (BatchNorm statistics, dropout draws untouched)."""
    probe = copy.deepcopy(model)
    rng = torch.get_rng_state()
    try:
        return {precision: _median_ms(step, probe, precision) for precision in ("fp32", "bf16")}
    finally:
        torch.set_rng_state(rng)


def _median_ms(step: Step, model: nn.Module, precision: str) -> float:
    for _ in range(WARMUP_STEPS):
        step(model, precision)
    times = []
    for _ in range(TIMED_STEPS):
        started = time.perf_counter()
        step(model, precision)
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2] * 1000


def resolve(device: torch.device, model: nn.Module, batch_shape: tuple[int, ...], step: Step) -> Verdict:
    """The cached verdict for this machine and model shape, else a measured one (then cached)."""
    path, key = cache_file(), f"{machine(device)}|{model_key(model, batch_shape)}"
    cache = _read_cache(path)
    if key in cache:
        return Verdict(**cache[key], cached=True)
    watch = OthersCpu()
    times = measure(step, model)
    verdict = Verdict(decide(times["fp32"], times["bf16"]), round(times["fp32"], 3), round(times["bf16"], 3),
                      others_cores=round(watch.cores(), 3))
    if verdict.contended:
        return verdict
    cache[key] = {"precision": verdict.precision, "fp32_ms": verdict.fp32_ms, "bf16_ms": verdict.bf16_ms}
    try:
        write_json(path, cache)
    except OSError as exc:  # a read-only home: measure again next time rather than fail the run
        log.warning("could not cache the precision verdict in %s (%s)", path, exc)
    return verdict


def _read_cache(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        cache = read_json(path)
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable precision cache %s (%s)", path, exc)
        return {}
    return cache if isinstance(cache, dict) else {}


class OthersCpu:
    """The CPU time other processes use from now on, in cores: the machine's busy ticks (/proc/stat) less this
    process's own CPU time, over the wall time (at least MIN_WINDOW_S). 0 where /proc/stat is absent."""

    def __init__(self) -> None:
        self.busy, self.own, self.wall = _machine_busy_s(), time.process_time(), time.perf_counter()

    def cores(self) -> float:
        busy = _machine_busy_s()
        if busy is None or self.busy is None:
            return 0.0
        others = (busy - self.busy) - (time.process_time() - self.own)
        return max(0.0, others) / max(time.perf_counter() - self.wall, MIN_WINDOW_S)


def _machine_busy_s() -> float | None:
    """Seconds of CPU time every process has used since boot: /proc/stat's user, nice, system, irq, softirq, steal."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
