"""The kinds registry (DESIGN.md §11): the one place where the core meets a kind.

A *kind* is one family of inputs and samples (ALS point-cloud tiles, satellite patches, DEM
patches, ...).  The core (recipe loading, plan, build, layout, report, card, Croissant, push)
never names one: it asks the registry for the :class:`Kind` object of a recipe's ``kind:`` key
(or of a build folder's ``manifest.json``) and calls it.  A kind is a package that subclasses
:class:`Kind` and calls :func:`register` once, when it is imported.

Kinds are found, the first time one is asked for, in two places:

- the packages under :mod:`als_datasets.kinds` (each one imported; importing registers it);
- the ``als_datasets.kinds`` entry-point group, for kinds shipped by other distributions
  (``[project.entry-points."als_datasets.kinds"] mykind = "mypkg.mykind"``).

Tests and notebooks may also :func:`register` a kind object directly.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from als_datasets.errors import InputError

#: the kind of a recipe without a ``kind:`` key (DESIGN.md §3)
DEFAULT_KIND = "als"
#: the entry-point group other distributions register kinds in
ENTRY_POINT_GROUP = "als_datasets.kinds"

_KINDS: dict[str, Kind] = {}
_discovered = False


class Kind:
    """What one kind provides to the core.  Subclass it, fill in the attributes, override the
    methods, and :func:`register` an instance.  Methods without a default must be overridden.
    """

    #: the recipe's ``kind:`` value and the manifest's ``kind``
    name: str = ""
    #: frame column that groups a split's samples into shards (in frame order, then draw rank)
    group_column: str = "group"
    #: index columns the diversity report and plots take label proportions / entropies of, in order
    label_columns: tuple[str, ...] = ()
    #: per-sample numeric index columns the report describes (distributions)
    distribution_columns: tuple[str, ...] = ()
    #: per-sample entropy columns (histograms), and how each is defined (``diversity.json``)
    entropy_columns: tuple[str, ...] = ()
    entropy_definitions: dict[str, str] = {}
    #: columns of ``als-datasets report A B`` comparisons this kind's reports fill
    compare_columns: tuple[str, ...] = ()
    #: an index column only this kind writes (tells the kind of a folder without a manifest)
    signature_column: str | None = None
    #: Croissant: descriptions of the sample's members / columns / json fields, and the json
    #: fields exposed as sub-fields of the ``json`` record field (in this order, when present)
    field_docs: dict[str, str] = {}
    json_fields: tuple[str, ...] = ()
    #: ``manifest.json`` ``skipped_tiles[].reason`` for a selected sample that was not written
    skipped_reason: str = "not written"
    #: listings :meth:`plan_summary` writes: they describe the plan, not the dataset, so they go
    #: next to the output folder (``<OUT>.<name>``, never published); a build still removes any
    #: left inside the folder by an older version
    plan_files: tuple[str, ...] = ()

    # ---- recipe
    def load_recipe(self, data: dict, src: Path | None, overrides: dict | None, out_dir) -> Any:
        """The recipe dict (demo already merged) → this kind's resolved recipe object: it has
        ``kind``, ``name``, ``strategy``, ``seed``, ``path``, ``out_dir``, ``formats``,
        ``shard_max_samples``, ``holdout_fraction`` and ``raw`` (what ``recipe.yaml`` records);
        ``shard_max_bytes`` too where the kind estimates its samples' bytes for
        :func:`als_datasets.plan.shard_specs` (:func:`als_datasets.recipe.shard_bounds` reads both)."""
        raise NotImplementedError

    def demo_recipe(self, seed: int) -> Path:
        """Path of this kind's embedded demo recipe (``demo: {kind: NAME}``), generated on first use."""
        raise InputError(None, f"kind {self.name!r} has no embedded demo")

    def check_strategy(self, recipe) -> None:
        """Refuse an unknown strategy before any work (one line naming the recipe)."""

    # ---- plan
    def frame_units(self, recipe) -> int:
        """How many progress steps the frame takes (projects, scenes...)."""
        return 1

    def make_plan(self, recipe, progress: Callable[[str, int, int], None] | None = None, executor=None):
        """Recipe → :class:`als_datasets.plan.Plan` (frame, draw, splits, shard specs)."""
        raise NotImplementedError

    def shortfall(self, plan) -> list[str]:
        """One line per part of the draw that holds fewer samples than the recipe asked for, with
        why (too few eligible candidates, overlap...); empty when every request is met.  ``build``
        and ``plan`` print them: a short draw is never silent."""
        return []

    def plan_summary(self, plan, out_dir: Path) -> list[str]:
        """Lines ``als-datasets plan`` prints after writing the frame (may write listings named in
        :attr:`plan_files` next to ``out_dir``, never into it)."""
        f = plan.frame
        return [f"{out_dir}/frame.parquet: {len(f)} candidates, {int(f['eligible'].sum())} eligible, "
                f"{len(plan.selected)} selected ({plan.recipe.strategy}, seed {plan.recipe.seed})"]

    # ---- build
    def shard_tasks(self, plan, out: Path, staging: Path, workers: int = 1) -> list:
        """One task per shard spec; a task has ``index``, ``split``, ``formats``, ``paths()``,
        ``features()``, ``iter_samples()`` (see :mod:`als_datasets.shards.tasks`)."""
        raise NotImplementedError

    def prepare(self, plan, tasks: list, staging: Path, executor, reporter) -> int:
        """Stage what the shard tasks still to run need (e.g. route points to tiles) before they
        run; returns the number of input files read.  Default: nothing to stage."""
        return 0

    # ---- output folder
    def index_columns(self, recipe) -> list[str]:
        """Columns of ``index.parquet`` (taken from each sample's json; ``key``/``shard`` added)."""
        raise NotImplementedError

    def info_fields(self, plan, out: Path, entries: list[dict]) -> dict:
        """Extra ``_info.json`` fields (after ``name``, ``version``, ``splits``)."""
        return {}

    def manifest_fields(self, plan) -> dict:
        """Extra ``manifest.json`` fields (after ``seed``)."""
        return {}

    # ---- card, Croissant
    def features(self, manifest: dict, recipe: dict):
        """The declared ``datasets.Features`` of a sample."""
        raise NotImplementedError

    def render_card(self, out: Path, div: dict, plots: list[Path], repo_id: str | None = None) -> tuple[dict, str]:
        """(card YAML dict, README.md text) of the build folder ``out``."""
        raise NotImplementedError

    def croissant_facts(self, manifest: dict, recipe: dict, idx: dict, columns: list[str]) -> dict:
        """Kind-specific Croissant fields: ``what`` (description noun phrase), ``keywords`` (set),
        ``resolution`` (a QuantitativeValue dict or None), ``bands`` (list), ``strategy_note`` (str)."""
        return {"what": f"{self.name} samples", "keywords": set(), "resolution": None, "bands": [],
                "strategy_note": ""}


def register(kind: Kind) -> Kind:
    """Add ``kind`` to the registry (replacing one of the same name); returns it."""
    if not isinstance(kind, Kind) or not kind.name:
        raise TypeError("register() takes a Kind instance with a name")
    _KINDS[kind.name] = kind
    return kind


def unregister(name: str) -> None:
    _KINDS.pop(name, None)


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    from importlib.metadata import entry_points

    import als_datasets.kinds as pkg

    for m in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if m.ispkg:
            importlib.import_module(f"{pkg.__name__}.{m.name}")
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        importlib.import_module(ep.value.split(":")[0])


def kind_names() -> list[str]:
    _discover()
    return sorted(_KINDS)


def _choices() -> str:
    names = kind_names()
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def get_kind(name: str | None, where=None, key: str = "kind") -> Kind:
    """The registered kind ``name`` (default :data:`DEFAULT_KIND`); an unknown name is one
    line naming ``where`` (the recipe or folder) and the kinds there are."""
    _discover()
    name = DEFAULT_KIND if name is None else str(name)
    kind = _KINDS.get(name)
    if kind is None:
        raise InputError(where, f"{key} {name!r}: expected {_choices()}")
    return kind


def report_columns(name: str | None) -> dict[str, list]:
    """The report's columns of kind ``name`` (label, distribution, entropy columns and entropy
    definitions); for an unknown or unnamed kind, those of every registered kind together."""
    _discover()
    kinds = [_KINDS[name]] if name in _KINDS else [_KINDS[k] for k in sorted(_KINDS)]
    out: dict[str, list] = {"label": [], "distribution": [], "entropy": []}
    definitions: dict[str, str] = {}
    for k in kinds:
        for key, cols in (("label", k.label_columns), ("distribution", k.distribution_columns),
                          ("entropy", k.entropy_columns)):
            out[key] += [c for c in cols if c not in out[key]]
        definitions.update(k.entropy_definitions)
    return {**out, "definitions": definitions, "group": [k.group_column for k in kinds]}


def infer_kind(columns) -> str | None:
    """The kind whose signature column is among ``columns`` (folders whose manifest says none)."""
    _discover()
    cols = set(columns)
    for name in sorted(_KINDS):
        sig = _KINDS[name].signature_column
        if sig and sig in cols:
            return name
    return None
