"""The tutorial experiment, generalised: one batch, random filters, the same conv in several frameworks.

The default reproduces the exercise convbridge grew out of: the first 32
CIFAR-10 test images (ToTensor + Normalize(0.5, 0.5)), 4 filters from
``jax.random.normal(PRNGKey(42), (4, 3, 5, 5))``, ``torch.nn.functional.conv2d``
and ``jax.lax.conv_general_dilated`` with ``('NCHW', 'OIHW', 'NCHW')``, valid
padding. This module calls only the public API (and jax.random for the filters).
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

import convbridge as cb
from convbridge import memory
from convbridge.arrays import to_host
from convbridge.data import DataError, Dataset, load_dataset, normalize
from convbridge.errors import ArgumentError, brief
from convbridge.memory import verdict_bytes
from convbridge.ops import get_op
from convbridge.precision import FLOAT_DTYPES, policy
from convbridge.spec import permutation, resolve_layout

__all__ = ["ExperimentConfig", "ExperimentResult", "Aggregate", "make_filters", "filter_shape", "run_experiment",
           "run_all", "iter_batches", "part_size"]


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything ``convbridge compare`` can change; the defaults are the tutorial's."""

    data: str | None = None
    root: str | None = None
    split: str = "test"
    data_layout: str = "auto"
    data_scale: str = "auto"
    download: bool = False
    md5: Mapping[str, str] | None = None
    batch_size: int = 32
    filters: int = 4
    kernel_size: int = 5
    seed: int = 42
    stride: object = 1
    padding: object = "valid"
    dilation: object = 1
    groups: int = 1
    layout: str = "NCHW"
    backends: tuple[str, ...] = ("torch", "jax")
    image_index: int = 0
    channel: int = 0
    repeats: int = 5
    exact: bool = False
    rerun: bool | str = "auto"
    dtype: str = "float32"
    precision: str = "highest"
    devices: int | None = None  # shard the jax backend's batches along N over this many local devices

    def conv_kwargs(self) -> dict[str, Any]:
        layout = None if self.layout == "NCHW" else self.layout
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups,
                    layout=layout)

    def run_kwargs(self) -> dict[str, Any]:
        """The conv's arguments and the plan's (the precision policy)."""
        return dict(self.conv_kwargs(), precision=self.precision)


@dataclass
class ExperimentResult:
    """What one run produced: the batch, the filters, every framework's output and the verdict."""

    config: ExperimentConfig
    dataset: Dataset
    x: np.ndarray
    kernel: np.ndarray
    kernel_source: str
    outputs: dict[str, np.ndarray]
    report: cb.ParityReport
    timings: dict[str, float]
    aggregate: Aggregate | None = None
    exact: cb.ParityReport | None = None  # the same conv on integer data (--exact)

    @property
    def outputs_nchw(self) -> dict[str, np.ndarray]:
        """Outputs (and the float64 reference) in NCHW, whatever the layout."""
        outs = dict(self.outputs, reference=self.report.outputs["reference"])
        return {k: _to_nchw(v, self.config.layout) for k, v in outs.items()}

    def ratio_nchw(self, a: str, b: str = "reference") -> np.ndarray:
        return _to_nchw(self.report.ratio_map(a, b), self.config.layout)

    def to_nchw(self, a: np.ndarray) -> np.ndarray:
        """An output-shaped map (the gauge, the term counts; broadcast to the output's shape first) in NCHW."""
        return _to_nchw(np.broadcast_to(a, self.report.shape), self.config.layout)

    def allowed_nchw(self, name: str) -> np.ndarray:
        """The rigorous bound on r = |name - reference| / (u G) at each element, in NCHW (float64).

        The judge holds element e to (beta(K_e) + beta_ref(K_e)) G_e / (u G_e), plus an underflow term that matters
        only where G_e is below about 1e-30, with K_e the element's own term count; the pair reports that bound at
        its worst element. Where every element has the same K it is that number everywhere; elsewhere the change
        with K (gamma_K = K u / (1 - K u) of each accumulation, Higham 2002, Lemma 3.1) is added to it. That is
        exact when the result is stored in the format it accumulated in, and overstates the change with K for a
        float16 or bfloat16 result accumulated in float32.
        """
        from convbridge.precision import REFERENCE

        rep = self.report
        p = rep.pair(name, "reference")
        terms = np.broadcast_to(np.asarray(rep.terms if rep.term_map is None else rep.term_map, np.float64),
                                rep.shape)
        if terms.size == 0:
            return np.zeros(_to_nchw(terms, self.config.layout).shape)
        worst = np.asarray(terms[p.worst_index] if len(p.worst_index) == terms.ndim else terms.flat[0])
        if np.all(terms == worst):
            return np.full(_to_nchw(terms, self.config.layout).shape, p.allowed_ratio)
        u = p.unit_roundoff
        spread = _gamma(terms, u) - _gamma(worst, u) + (REFERENCE.bounds(terms) - REFERENCE.bounds(worst))
        with np.errstate(invalid="ignore"):
            allowed = p.allowed_ratio + spread / u
        return _to_nchw(np.where(np.isnan(allowed), np.inf, allowed), self.config.layout)


def _gamma(terms: np.ndarray | float, u: float) -> np.ndarray:
    """gamma_K = K u / (1 - K u), inf where K u >= 1."""
    ku = np.asarray(terms, np.float64) * u
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ku < 1, ku / np.where(ku < 1, 1 - ku, 1.0), np.inf)


def _to_nchw(a: np.ndarray, layout: str) -> np.ndarray:
    return np.transpose(a, permutation(layout, "NCHW"))


def make_filters(seed: int, shape: tuple[int, ...], notice: Callable[[str], object] = print) -> tuple[np.ndarray, str]:
    """``jax.random.normal(jax.random.PRNGKey(seed), shape)`` as float32 NumPy, as the tutorial made them.

    Falls back to NumPy's generator, with a notice, when JAX is not installed.

    Raises:
        MemoryLimitError: if the filters (and the generator's random bits and float64 copy) need more
            than the memory limit.
    """
    memory.check(16 * math.prod(shape) + memory.SLACK, f"drawing {math.prod(shape):,} filter weights {shape}",
                 "use fewer --filters or a smaller --kernel-size")
    try:
        import jax
    except ImportError:
        notice("JAX is not installed; drawing the filters with numpy.random.default_rng(seed) instead")
        rng = np.random.default_rng(seed)
        return rng.standard_normal(shape).astype(np.float32), f"numpy.random.default_rng({seed}).standard_normal"
    w = np.asarray(jax.random.normal(jax.random.PRNGKey(seed), shape), dtype=np.float32)
    return w, f"jax.random.normal(PRNGKey({seed}), {shape})"


def check_config(cfg: ExperimentConfig) -> None:
    """Refuse impossible experiment settings before any data is read or any filter drawn."""
    for name in ("batch_size", "filters", "kernel_size", "repeats", "groups"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ArgumentError(f"{name.replace('_', '-')} must be a positive int, got {brief(value)}")
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int) or not 0 <= cfg.seed < 2**32:
        raise ArgumentError(f"seed must be an int in 0..{2**32 - 1} (a jax.random.PRNGKey seed), got {brief(cfg.seed)}")
    if cfg.layout not in ("NCHW", "NHWC"):
        raise ArgumentError(f"layout must be 'NCHW' or 'NHWC' for the experiment, got {brief(cfg.layout)}")
    if not cfg.backends:
        raise ArgumentError("give at least one backend, e.g. --backends torch,jax")
    for b in cfg.backends:
        if b not in ("numpy", "jax", "torch"):
            raise ArgumentError(f"unknown backend {brief(b)}; choose from 'torch', 'jax', 'numpy'")
    if cfg.dtype not in FLOAT_DTYPES:
        raise ArgumentError(f"dtype must be one of {', '.join(FLOAT_DTYPES)} for the experiment (its images and "
                            f"filters are real), got {brief(cfg.dtype)}")
    policy(cfg.precision)
    _check_devices(cfg)


def _check_devices(cfg: ExperimentConfig) -> None:
    """``devices``: None, or a count of devices that divides the batch size, with jax among the backends."""
    if cfg.devices is None:
        return
    if isinstance(cfg.devices, bool) or not isinstance(cfg.devices, int) or cfg.devices < 1:
        raise ArgumentError(f"devices must be a positive int, got {brief(cfg.devices)}")
    if "jax" not in cfg.backends:
        raise ArgumentError(f"devices shards the jax backend's batches, and the backends are "
                            f"{', '.join(cfg.backends)}; add jax to --backends")
    if cfg.batch_size % cfg.devices:
        k = cfg.devices
        near = sorted({max(cfg.batch_size // k, 1) * k, -(-cfg.batch_size // k) * k})
        raise ArgumentError(f"batch-size {cfg.batch_size} does not split evenly over {k} devices; use a multiple of "
                            f"{k} such as {' or '.join(map(str, near))}")


def _jax_input(cfg: ExperimentConfig, x: np.ndarray) -> Any:
    """What the jax backend computes on: ``x`` itself, or with ``cfg.devices`` split along N over the largest
    number of those devices that divides the batch (all of them but for a last, shorter batch)."""
    if cfg.devices is None or "jax" not in cfg.backends:
        return x
    from convbridge import sharding

    devices = sharding.local_devices(cfg.devices)
    n = x.shape[cfg.layout.index("N")]
    return sharding.shard_batch(x, devices[:max(sharding.divisors(n, len(devices)))], layout=cfg.layout)


def _inputs(cfg: ExperimentConfig, x: np.ndarray) -> dict[str, Any]:
    """Each backend's input: the host array, and for jax with ``cfg.devices`` the batch split over them."""
    xj = _jax_input(cfg, x)
    return {name: xj if name == "jax" else x for name in cfg.backends}


def _prepare(cfg: ExperimentConfig, batch: Dataset, kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The normalised NCHW images and the OIHW kernel, laid out as ``cfg.layout`` asks (its kernel letters are
    convbridge's default for that input layout)."""
    x = normalize(batch.images) if batch.values is None else batch.values
    lay = resolve_layout(None if cfg.layout == "NCHW" else cfg.layout, x.ndim, kernel.ndim)
    dtype = _np_dtype(cfg.dtype)
    return (_cast(np.ascontiguousarray(x.transpose(permutation("NCHW", lay.lhs))), dtype, "images"),
            _cast(np.ascontiguousarray(kernel.transpose(permutation("OIHW", lay.rhs))), dtype, "filters"))


def _cast(a: np.ndarray, dtype: Any, what: str) -> np.ndarray:
    """``a`` in ``dtype``; values past its range are refused (they would become inf), not warned about."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = a.astype(dtype)
    if not np.isfinite(out.astype(np.float32)).all() and np.isfinite(a).all():
        big = float(np.max(np.abs(a)))
        raise DataError(f"the {what} reach {big:.4g}, beyond {np.dtype(dtype).name}'s range: they would become inf; "
                        "rescale the data (--data-scale), or use a wider --dtype such as float32")
    return out


def _np_dtype(name: str) -> Any:
    if name == "bfloat16":
        import ml_dtypes

        return ml_dtypes.bfloat16
    return np.dtype(name)


def _x64(cfg: ExperimentConfig) -> contextlib.AbstractContextManager[Any]:
    """JAX's float64 mode for a float64 experiment on the jax backend (restored after), else nothing."""
    if cfg.dtype == "float64" and "jax" in cfg.backends:
        from convbridge.backends import jax_backend

        return cast(contextlib.AbstractContextManager[Any], jax_backend.float64())
    return contextlib.nullcontext()


def _timed_outputs(cfg: ExperimentConfig, inputs: Mapping[str, Any],
                   w: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    outputs, timings = {}, {}
    for name in cfg.backends:
        x = inputs[name]
        y = cb.conv(x, w, backend=name, **cfg.run_kwargs())  # warm-up (JAX compiles this shape)
        times = []
        for _ in range(cfg.repeats):
            t0 = time.perf_counter()
            y = cb.conv(x, w, backend=name, **cfg.run_kwargs())
            to_host(y)  # wait for asynchronous JAX dispatch
            times.append(time.perf_counter() - t0)
        outputs[name], timings[name] = to_host(y), statistics.median(times)
    return outputs, timings


def load_images(cfg: ExperimentConfig, notice: Callable[[str], object] = print, progress: bool = True) -> Dataset:
    """The data set the experiment runs on (CIFAR-10, the embedded sample, or the user's)."""
    return load_dataset(cfg.data, root=cfg.root, split=cfg.split, md5=cfg.md5, download=cfg.download,
                        notice=notice, progress=progress, layout=cfg.data_layout, scale=cfg.data_scale)


def run_experiment(cfg: ExperimentConfig, *, dataset: Dataset | None = None,
                   notice: Callable[[str], object] = print) -> ExperimentResult:
    """Run the experiment on the first ``batch_size`` images.

    Raises:
        ConvBridgeError: impossible conv arguments, unknown backends, missing or corrupt data.
    """
    check_config(cfg)
    full = dataset if dataset is not None else load_images(cfg, notice)
    batch = full.head(cfg.batch_size)
    kernel_shape = filter_shape(cfg)
    lay = resolve_layout(None if cfg.layout == "NCHW" else cfg.layout, 4, 4)
    nchw = (len(batch), 3, *batch.images.shape[1:3])
    x_shape = tuple(nchw[i] for i in permutation("NCHW", lay.lhs))
    w_shape = tuple(kernel_shape[i] for i in permutation("OIHW", lay.rhs))
    spec = get_op("conv").build(x_shape, w_shape, **cfg.conv_kwargs())  # impossible arguments fail here
    _check_indices(cfg, len(batch))
    memory.check(verdict_bytes(spec, len(cfg.backends)), f"judging the conv of {x_shape} with {w_shape} on "
                 f"{len(cfg.backends)} backend(s)", "use a smaller --batch-size, fewer --filters or a smaller "
                 "--kernel-size")  # before any filter is drawn or any backend runs
    kernel, source = make_filters(cfg.seed, kernel_shape, notice)
    x, w = _prepare(cfg, batch, kernel)
    with _x64(cfg):
        inputs = _inputs(cfg, x)
        outputs, timings = _timed_outputs(cfg, inputs, w)
        judged = inputs.get("jax", x)  # the jax backend computes on the sharded batch; the others copy it to the host
        report = cb.compare(judged, w, backends=cfg.backends, rerun=cfg.rerun, **cfg.run_kwargs())
        exact = cb.compare(judged, w, backends=cfg.backends, exact=True, **cfg.run_kwargs()) if cfg.exact else None
    return ExperimentResult(cfg, batch, x, kernel, source, outputs, report, timings, exact=exact)


def filter_shape(cfg: ExperimentConfig) -> tuple[int, ...]:
    """The OIHW shape of the experiment's random filters."""
    return cfg.filters, 3 // cfg.groups if 3 % cfg.groups == 0 else 3, cfg.kernel_size, cfg.kernel_size


def _check_indices(cfg: ExperimentConfig, n: int) -> None:
    if not 0 <= cfg.image_index < n:
        raise ArgumentError(f"image-index {cfg.image_index} is outside the batch of {n} images; use 0..{n - 1}")
    if not 0 <= cfg.channel < cfg.filters:
        raise ArgumentError(f"channel {cfg.channel} is outside the {cfg.filters} output channels; "
                            f"use 0..{cfg.filters - 1}")


@dataclass
class Aggregate:
    """Statistics over a whole split, batch by batch (``--all``)."""

    images: int = 0
    batches: int = 0
    worst: dict[str, tuple[float, float, str]] = field(default_factory=dict)  # pair -> (max r, allowed r, verdict)
    different: dict[str, int] = field(default_factory=dict)  # pair -> count of non-identical elements
    elements: int = 0
    seconds: dict[str, float] = field(default_factory=dict)  # backend -> total conv time
    verdict: str = "identical"

    def add(self, report: cb.ParityReport, timings: Mapping[str, float], n_images: int) -> None:
        from convbridge.parity import worst_verdict

        self.images += n_images
        self.batches += 1
        self.elements += int(np.prod(report.shape))
        for p in report.pairs:
            key = f"{p.a} vs {p.b}"
            old = self.worst.get(key, (0.0, p.allowed_ratio, "identical"))
            self.worst[key] = (max(old[0], p.max_ratio), p.allowed_ratio, worst_verdict((old[2], p.verdict)))
            self.different[key] = self.different.get(key, 0) + p.n_different
        for name, t in timings.items():
            self.seconds[name] = self.seconds.get(name, 0.0) + t
        self.verdict = worst_verdict((self.verdict, report.verdict))

    def to_dict(self) -> dict[str, Any]:
        return {
            "images": self.images, "batches": self.batches, "elements": self.elements, "verdict": self.verdict,
            "pairs": {k: {"max_ratio": v[0], "allowed_ratio": v[1], "verdict": v[2],
                          "non_identical_elements": self.different[k]} for k, v in self.worst.items()},
            "seconds_per_backend": dict(self.seconds),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Aggregate:
        """The aggregate :meth:`to_dict` described (another process's, in a multi-process run)."""
        pairs = data["pairs"]
        return cls(images=data["images"], batches=data["batches"], elements=data["elements"],
                   verdict=data["verdict"], seconds=dict(data["seconds_per_backend"]),
                   worst={k: (v["max_ratio"], v["allowed_ratio"], v["verdict"]) for k, v in pairs.items()},
                   different={k: v["non_identical_elements"] for k, v in pairs.items()})

    def merge(self, other: Aggregate) -> None:
        """Add another part of the split (another process's): counts and times add, the worst ratio and verdict
        win."""
        from convbridge.parity import worst_verdict

        self.images += other.images
        self.batches += other.batches
        self.elements += other.elements
        for key, (ratio, allowed, verdict) in other.worst.items():
            old = self.worst.get(key, (0.0, allowed, "identical"))
            self.worst[key] = (max(old[0], ratio), allowed, worst_verdict((old[2], verdict)))
            self.different[key] = self.different.get(key, 0) + other.different.get(key, 0)
        for name, t in other.seconds.items():
            self.seconds[name] = self.seconds.get(name, 0.0) + t
        self.verdict = worst_verdict((self.verdict, other.verdict))


def iter_batches(dataset: Dataset, batch_size: int, part: tuple[int, int] = (0, 1)) -> Iterator[Dataset]:
    """The batches of ``dataset`` (views: the float copies are made one batch at a time); ``part = (i, n)``:
    the i-th of n contiguous runs of whole batches (one process's share in a multi-process run)."""
    index, count = part
    total = -(-len(dataset) // batch_size)
    for b in range(index * total // count, (index + 1) * total // count):
        yield dataset.slice(b * batch_size, (b + 1) * batch_size)


def part_size(dataset: Dataset, batch_size: int, part: tuple[int, int] = (0, 1)) -> int:
    """The images :func:`iter_batches` yields for ``part`` (for progress bars)."""
    return sum(len(b) for b in iter_batches(dataset, batch_size, part))


def run_all(cfg: ExperimentConfig, dataset: Dataset, kernel: np.ndarray,
            on_batch: Callable[[int], object] = lambda n: None, part: tuple[int, int] = (0, 1)) -> Aggregate:
    """Run every batch of ``dataset`` (``part = (i, n)``: only the i-th of n shares, see :func:`iter_batches`);
    ``on_batch(n_images)`` is called after each (for progress bars). One batch is in memory at a time, as float
    arrays; each is checked against the memory limit before it runs (:mod:`convbridge.memory`). With
    ``cfg.devices``, the jax backend computes each batch split along N over the devices."""
    agg = Aggregate()
    one = dict(cfg.__dict__, repeats=1)
    quick = ExperimentConfig(**one)
    for batch in iter_batches(dataset, cfg.batch_size, part):
        x, w = _prepare(cfg, batch, kernel)
        with _x64(cfg):
            inputs = _inputs(cfg, x)
            _, timings = _timed_outputs(quick, inputs, w)
            report = cb.compare(inputs.get("jax", x), w, backends=cfg.backends, rerun=cfg.rerun, **cfg.run_kwargs())
        agg.add(report, timings, len(batch))
        on_batch(len(batch))
    return agg
