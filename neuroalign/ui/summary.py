"""`RunSummary`: what the pages read of one run folder, typed (built by `loaders.run_summary` and
`loaders.shared_subject_summary`, cached there). The JSON files stay plain dicts in their fields;
the properties answer the questions pages ask of them (which subject, which kind, why it ended,
its test rows) so pages do not chain `.get(...) or {}` through config.json.

A `RunSummary` is also a read-only mapping of its fields (`summary["metrics"]`,
`summary.get("config")`) for the display helpers that take plain data (e.g. `tables.run_row`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from neuroalign.ui.result_files import RunResults, SharedResults


@dataclass(frozen=True)
class RunSummary(Mapping):
    config: dict[str, Any] = field(default_factory=dict)  # config.json: {"config": {...}, "subject": {...}, "kind", ...}
    split: dict[str, Any] | None = None  # split.json: train/val/test index arrays
    status: dict[str, Any] = field(default_factory=dict)  # status.json
    results: dict[str, Any] | None = None  # results.json (None before the run has results)
    metrics: list[dict[str, Any]] = field(default_factory=list)  # metrics.jsonl records
    problems: dict[str, str] = field(default_factory=dict)  # damaged file name -> one-line message
    shared: dict[str, Any] | None = None  # one subject of a shared/adapted run: kind, subjects, results, ...
    problem: str | None = None  # the Runs table's joined problem line

    @property
    def subject(self) -> dict[str, Any]:
        """config.json's record of the run's subject (name, path, data_hash, ...); {} when absent."""
        record = self.config.get("subject")
        return record if isinstance(record, dict) else {}

    @property
    def subject_name(self) -> str | None:
        name = self.subject.get("name")
        return str(name) if name else None

    @property
    def kind(self) -> str | None:
        """"shared", "adapted", or None for a single-subject run."""
        return self.config.get("kind")

    @property
    def is_shared(self) -> bool:
        """One subject's view of a shared or adapted run (`loaders.shared_subject_summary`)."""
        return self.shared is not None

    @property
    def shared_subject(self) -> str | None:
        """The subject picked in a shared or adapted run (None for a single-subject run)."""
        name = (self.shared or {}).get("subject")
        return None if name is None else str(name)

    @property
    def shared_results(self) -> SharedResults:
        """shared_results.json of a shared or adapted run, typed (empty for a single-subject run)."""
        return SharedResults.from_json((self.shared or {}).get("results"))

    @property
    def run_results(self) -> RunResults:
        """results.json, typed (empty before the run has results or when the file is damaged)."""
        return RunResults.from_json(self.results)

    @property
    def status_message(self) -> str:
        return str(self.status.get("message") or "")

    @property
    def test_indices(self) -> Any:
        """The test rows of split.json, or None."""
        return (self.split or {}).get("test")

    # ---- read-only mapping of the fields ---------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        if key not in _FIELDS:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(_FIELDS)

    def __len__(self) -> int:
        return len(_FIELDS)


_FIELDS = tuple(f.name for f in fields(RunSummary))
