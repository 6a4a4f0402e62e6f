"""The one registry of estimators: each estimator module declares itself here, once.

An :class:`Estimator` says everything the rest of the package needs to know about a method: its
name, whether it reads streamed moments or samples, its functions, its option defaults (read from
the function's own signature, so they are written once), how it reports uncertainty and bias, and
the defaults Information Emergence uses. :func:`emergence_fast.entropy`,
:func:`emergence_fast.mutual_information`, ``return_stderr``, :func:`permutation_null`,
Information Emergence and the CLI read this table; none of them branches on an estimator's name.

Every registered function has one signature (checked by ``tests/estimators/test_registry.py``)::

    mutual_information(x, y, *, base=None, backend=None, details=False, seed=0, **options)
    entropy(x, *, base=None, backend=None, details=False, seed=0, **options)

``x [..., N, dx]``, ``y [..., N, dy]`` with leading batch dims; the value is a float64 tensor of
the batch shape in nats (``base=2`` for bits); ``details=True`` returns ``(value, details)`` with
``details`` an instance of :class:`Details`; ``seed`` fixes whatever randomness the method has
(deterministic methods accept and ignore it).

Adding an estimator is one file: write the module, call :func:`register` at its end, and import
it in ``estimators/__init__.py`` (or, for a user's own method, anywhere before use).
"""
from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Callable

from .._validation import check_seed

KINDS = ("moment", "sample")
# How ``return_stderr`` gets a standard error (:mod:`.uncertainty`):
#   "own": the estimator's own error in ``details.stderr`` (a delta method, a held-out split);
#       the jackknife where that is None (the Gaussian entropy has no delta method here);
#   "jackknife+own": a delete-half jackknife, plus ``details.stderr`` (the Monte-Carlo error of
#       an approximation: slices, probes) in quadrature;
#   "jackknife": a delete-half jackknife alone.
UNCERTAINTY = ("own", "jackknife+own", "jackknife")
COMMON_PARAMETERS = ("base", "backend", "details", "seed")


class Details:
    """Base of every ``details=True`` result: what an estimate rests on.

    Every subclass (a dataclass with the estimator's own fields) has ``stderr``: the estimator's
    own standard error (float64 tensor of the batch shape, in the value's unit) where it has
    one, else None.
    """

    stderr: object


@dataclass(frozen=True)
class Estimator:
    """One estimator's declaration.

    Parameters
    ----------
    name : str
        The ``method=`` name of the public API and ``--estimator`` of the CLI.
    summary : str
        One line: what it estimates and its source (paper, equation).
    kind : {"moment", "sample"}
        ``"moment"``: the estimate is a function of streamed sufficient statistics, so
        :attr:`mi_from_moments` is given and IE accumulates moments; ``"sample"``: it needs the
        rows themselves (IE keeps a seeded reservoir).
    mutual_information, entropy : callable or None
        The functions, in the common signature above.
    mi_from_moments : callable or None
        ``f(count, comoment, dx, *, base=None, details=False, **options)`` for moment estimators.
    mi_from_subspace_moments : callable or None
        As ``mi_from_moments``, for moments of coordinates already standardised and rotated to
        principal directions (IE's bounded subspace state); default ``mi_from_moments``.
    uncertainty : {"own", "jackknife+own", "jackknife"}
        How ``return_stderr`` obtains a standard error (see the module comment).
    weighted_mi : callable or None
        ``weighted_mi(x, y, weights, options, *, cells, backend) -> (value, stderr)`` in nats on
        distinct atoms ``x [C, n, dx]``, ``y [C, n, dy]`` with integer ``weights [C, n]``, its
        randomness seeded by the cell ids ``cells [C]`` so that a cell's value does not depend on
        its batch. With one, IE feeds the estimator one row per distinct prefix (macro) or token
        (micro) with its count instead of every kept row.
    weighted_working_bytes : callable or None
        ``weighted_working_bytes(n_atoms, dim, options) -> int``: one cell's temporaries in ``weighted_mi``.
    ie : bool
        Whether Information Emergence offers it (``--estimator``).
    ie_defaults : Mapping
        Options IE uses when the caller gives none, where they differ from the function's defaults
        (the reason goes beside them, in the estimator's module).
    ie_jackknife : bool
        Whether IE may spend a jackknife on it (False where one resample costs a full training).
    ie_note : callable or None
        ``ie_note(options) -> str``: what an IE number by this estimator means, for the report.
    ie_stderr_reason : callable or None
        ``ie_stderr_reason(options, rows) -> str | None``: why IE's standard error is undefined on
        ``rows`` kept rows per cell, where the estimator knows.
    subspace_note : callable or None
        ``subspace_note(options, rank) -> str``: what a moment estimator computed on IE's bounded
        rank-``rank`` subspace state.
    ie_min_rank : callable or None
        ``ie_min_rank(options) -> int``: the least subspace rank per side a moment estimator needs
        with these options (e.g. its ``pca``), for IE's bounded-state plan; default none.
    ie_notes : callable or None
        ``ie_notes(options, input_ids, macro, micro, macro_bias, micro_bias, unit) -> list[str]``:
        the estimator's own notes on an IE result (ill-posed cells and why, bias corrections).
    check_options : callable or None
        ``check_options(**options)``: validates option values without data (ValueError/TypeError).
        Sample estimators are also probed on random rows before a long run.
    trained : bool
        The method trains a network for ``steps`` steps; an option probe runs one step.
    working_bytes : callable or None
        ``working_bytes(options, n, dx, dy, batch, *, native_knn=True) -> int``: the modelled
        peak memory of one call on ``batch`` cells beyond its inputs, which plans the chunks of
        IE's estimate stage, the jackknife and the permutation null. Without one, a call is
        modelled as three float64 copies of its input.
    """

    name: str
    summary: str
    kind: str
    mutual_information: Callable | None = None
    entropy: Callable | None = None
    mi_from_moments: Callable | None = None
    mi_from_subspace_moments: Callable | None = None
    uncertainty: str = "jackknife"
    weighted_mi: Callable | None = None
    weighted_working_bytes: Callable | None = None
    ie: bool = False
    ie_defaults: Mapping = field(default_factory=dict)
    ie_jackknife: bool = True
    ie_note: Callable | None = None
    ie_stderr_reason: Callable | None = None
    subspace_note: Callable | None = None
    ie_min_rank: Callable | None = None
    ie_notes: Callable | None = None
    check_options: Callable | None = None
    trained: bool = False
    working_bytes: Callable | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"name must be a Python identifier such as 'my_mi', got {self.name!r}")
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.uncertainty not in UNCERTAINTY:
            raise ValueError(f"uncertainty must be one of {UNCERTAINTY}, got {self.uncertainty!r}")
        if self.mutual_information is None and self.entropy is None:
            raise ValueError(f"estimator {self.name!r} declares neither mutual_information nor entropy")
        if self.kind == "moment" and self.mi_from_moments is None:
            raise ValueError(f"moment estimator {self.name!r} needs mi_from_moments")
        if self.ie and self.mutual_information is None:
            raise ValueError(f"estimator {self.name!r} is offered to IE but has no mutual_information")
        if (self.weighted_mi is None) != (self.weighted_working_bytes is None):
            raise ValueError(f"estimator {self.name!r}: weighted_mi and weighted_working_bytes come together")
        for quantity in ("mutual_information", "entropy", "mi_from_moments"):
            function = getattr(self, quantity)
            if function is None:
                continue
            parameters = inspect.signature(function).parameters
            needed = ("base", "details") if quantity == "mi_from_moments" else COMMON_PARAMETERS
            missing = [name for name in needed if name not in parameters
                       or parameters[name].kind is not inspect.Parameter.KEYWORD_ONLY]
            if missing:
                raise ValueError(f"estimator {self.name!r}: {quantity} must take the keyword-only arguments "
                                 f"{list(needed)} (the common signature), missing {missing}")
        unknown = set(self.ie_defaults) - set(self.ie_options()) - {"seed"} if self.ie else set()
        if unknown:
            raise ValueError(f"estimator {self.name!r}: ie_defaults has keys {sorted(unknown)} that its IE function "
                             f"does not take ({sorted(self.ie_options())})")

    def options(self, quantity: str | None = None) -> dict:
        """The method's options and their defaults, read from its function's signature (``quantity``:
        ``"mutual_information"`` or ``"entropy"``; default the MI function where there is one)."""
        return self._options_of(getattr(self, quantity) if quantity else (self.mutual_information or self.entropy))

    @staticmethod
    def _options_of(function) -> dict:
        bound = getattr(function, "keywords", {})  # a functools.partial fixes some (the neural bound's method)
        return {name: p.default for name, p in inspect.signature(function).parameters.items()
                if p.kind is p.KEYWORD_ONLY and name not in COMMON_PARAMETERS and name not in bound
                and not name.startswith("_") and name != "weights"}

    @property
    def ie_function(self) -> Callable:
        """The function IE calls: the moments form of a moment estimator, else the MI function."""
        return self.mi_from_moments if self.kind == "moment" else self.mutual_information

    def ie_options(self) -> dict:
        """The options IE can pass, and their defaults: those of :attr:`ie_function`."""
        return self._options_of(self.ie_function)

    @property
    def subspace_estimate(self) -> Callable | None:
        """The moments function for IE's subspace state (``mi_from_subspace_moments`` or ``mi_from_moments``)."""
        return self.mi_from_subspace_moments or self.mi_from_moments

    def call_bytes(self, options: Mapping, n: int, dx: int, dy: int, batch: int, *, native_knn: bool = True) -> int:
        """Modelled peak bytes of one call on ``batch`` cells of ``n`` rows (see ``working_bytes``)."""
        if self.working_bytes is None:
            return 3 * 8 * batch * n * (dx + dy)
        return self.working_bytes(dict(options), n, dx, dy, batch, native_knn=native_knn)

    def validate(self, options: Mapping, **context) -> None:
        """The common ``seed`` (an integer), then ``check_options`` on ``options`` (missing ones at their
        defaults) and whichever ``context`` (e.g. ``n_samples``, ``width``) it accepts; ValueError/TypeError
        naming the option."""
        check_seed(options.get("seed", 0))
        if self.check_options is None:
            return
        accepted = inspect.signature(self.check_options).parameters
        given = {**self.ie_options(), **options, **context}
        self.check_options(**{name: value for name, value in given.items() if name in accepted})

    def resolve_ie_options(self, options: Mapping | None) -> dict:
        """IE's options: ``ie_defaults`` overridden key by key by ``options``; unknown keys refused."""
        chosen = {**self.ie_defaults, **(options or {})}
        accepted = set(self.ie_options()) | {"seed"}
        unknown = set(chosen) - accepted
        if unknown:
            raise ValueError(f"estimator_options has unknown keys {sorted(unknown)}; the {self.name} estimator takes "
                             f"{sorted(accepted)}")
        return chosen


_REGISTRY: dict[str, Estimator] = {}


def register(estimator: Estimator, *, replace: bool = False) -> Estimator:
    """Declare ``estimator``; ValueError if its name is taken (unless ``replace``)."""
    if not isinstance(estimator, Estimator):
        raise TypeError(f"estimator must be an Estimator, got {type(estimator).__name__}")
    if estimator.name in _REGISTRY and not replace:
        raise ValueError(f"an estimator named {estimator.name!r} is already registered")
    _REGISTRY[estimator.name] = estimator
    return estimator


def unregister(name: str) -> None:
    """Remove a registered estimator (a test's toy one); KeyError if there is none of that name."""
    del _REGISTRY[name]


def get(name, quantity: str | None = None, argument: str = "method") -> Estimator:
    """The estimator called ``name``; ValueError naming ``argument`` and the choices otherwise.

    ``quantity`` (``"mutual_information"``, ``"entropy"``, ``"ie"``) restricts the choices to the
    estimators that provide it.
    """
    choices = names(quantity)
    if name not in choices:
        raise ValueError(f"{argument} must be one of {choices}, got {name!r}")
    return _REGISTRY[name]


def names(quantity: str | None = None) -> tuple[str, ...]:
    """Registered names, in registration order, of those providing ``quantity`` (all when None)."""
    if quantity == "ie":
        return tuple(name for name, e in _REGISTRY.items() if e.ie)
    return tuple(name for name, e in _REGISTRY.items() if quantity is None or getattr(e, quantity) is not None)


def all_estimators() -> tuple[Estimator, ...]:
    return tuple(_REGISTRY.values())


class MethodTable(Mapping):
    """A live read-only ``{name: function}`` view of the registry for one quantity."""

    def __init__(self, quantity: str):
        self._quantity = quantity

    def __getitem__(self, name):
        if name not in names(self._quantity):
            raise KeyError(name)
        return getattr(_REGISTRY[name], self._quantity)

    def __iter__(self):
        return iter(names(self._quantity))

    def __len__(self):
        return len(names(self._quantity))
