"""`RunSummary` (issue 22 item 4): the typed view of a run folder the pages read."""

from __future__ import annotations

import pickle

import app_support as s
from app_support import app_env, app_populated  # noqa: F401 - fixtures
from neuroalign.ui.summary import RunSummary


def test_the_questions_pages_ask_have_typed_answers():
    summary = RunSummary(config={"subject": {"name": "m1", "data_hash": "abc"}, "kind": "shared"},
                         split={"test": [4, 5]}, status={"state": "failed", "message": "NaN"})
    assert (summary.subject_name, summary.kind, summary.status_message) == ("m1", "shared", "NaN")
    assert summary.test_indices == [4, 5] and summary.subject["data_hash"] == "abc"
    assert not summary.is_shared and RunSummary(shared={"subject": "m1"}).is_shared
    empty = RunSummary()  # a run whose files could not be read
    assert (empty.subject_name, empty.kind, empty.status_message, empty.test_indices) == (None, None, "", None)
    assert RunSummary(config={"subject": "not a record"}).subject_name is None
    assert pickle.loads(pickle.dumps(summary)) == summary  # st.cache_data keeps it pickled


def test_it_reads_as_a_mapping_of_its_fields_for_the_table_helpers():
    summary = RunSummary(metrics=[{"event": "epoch"}], problems={"results.json": "damaged"})
    assert summary["metrics"] == [{"event": "epoch"}] and summary.get("problems") == {"results.json": "damaged"}
    assert summary.get("unknown", 7) == 7 and "config" in summary and "unknown" not in summary
    assert set(dict(summary)) == {"config", "split", "status", "results", "metrics", "problems", "shared", "problem"}


def test_loaders_build_it_from_a_run_folder(app_populated):  # noqa: F811
    from neuroalign.ui import loaders

    summary = loaders.run_summary(app_populated["run"])
    assert isinstance(summary, RunSummary)
    assert summary.subject_name == "m1" and summary.kind is None and not summary.is_shared
    assert list(summary.test_indices) == list(range(42, 48)) and summary.metrics and not summary.problems
    table = loaders.runs_table()
    assert table.frame["run"].tolist() == [app_populated["run"].name]
