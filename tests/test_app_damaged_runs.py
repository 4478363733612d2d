"""Damaged run files on every page that reads runs (Home, Runs, Retrieval, Feature maps, Neurons):
a one-line st.error for that run, the other runs keep working, never a traceback."""

import pytest

import app_support as s
from app_support import app_env, app_populated  # noqa: F401 (fixtures)

from neuroalign.ui import keys

RESULT_PAGES = ("pages/retrieval.py", "pages/feature_maps.py", "pages/neurons.py")


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.fixture
def damaged(app_populated):
    """A good run and, newer, a run whose results.json and best.pt are cut in half."""
    env = app_populated
    bad = s.write_finished_run(env["runs"], "m1", env["subject_dir"], seed=7)
    (bad / "best.pt").write_bytes(b"PK\x03\x04 not a whole checkpoint")
    _truncate(bad / "best.pt")
    _truncate(bad / "results.json")
    env["bad"] = bad
    return env


def _errors(at):
    return [e.value for e in at.error]


def test_home_and_runs_name_the_damaged_run_and_list_the_good_one(damaged):
    good, bad = damaged["run"], damaged["bad"]
    at = s.app_at("pages/home.py")
    s.no_exceptions(at)
    errors = _errors(at)
    assert len(errors) == 1 and errors[0].startswith(f"Run {bad.name}:") and "results.json" in errors[0]
    assert "\n" not in errors[0]
    assert any(f"run `{good.name}`" in c.value for c in at.caption)  # best result per subject: the good run
    at.switch_page("pages/runs.py").run()
    s.no_exceptions(at)
    assert any(e.startswith(f"Run {bad.name}:") and "results.json" in e for e in _errors(at))
    table = at.dataframe[0].value.set_index("run")
    assert set(table.index) == {good.name, bad.name}
    assert "results.json" in table.loc[bad.name, "problem"] and table.loc[good.name, "problem"] == ""
    at.selectbox(key=keys.RUNS_ONE).set_value(str(bad)).run()  # the damaged run can be opened and deleted
    s.no_exceptions(at)
    at.checkbox(key=keys.delete_confirm(keys.RUNS_DELETE_CONFIRM, bad.name)).check().run()
    at.button(key=keys.RUNS_DELETE).click().run()
    s.no_exceptions(at)
    assert not bad.exists() and at.dataframe[0].value["run"].tolist() == [good.name]


@pytest.mark.parametrize("page", RESULT_PAGES)
def test_result_pages_show_the_error_and_still_open_the_good_run(damaged, page):
    good, bad = damaged["run"], damaged["bad"]
    key = {"pages/retrieval.py": keys.RETRIEVAL_RUN, "pages/feature_maps.py": keys.MAPS_RUN,
           "pages/neurons.py": "neurons.run"}[page]
    at = s.app_at()
    at.session_state[keys.SELECTED_RUN] = str(bad)
    at.switch_page(page).run()
    s.no_exceptions(at)
    errors = _errors(at)
    assert any(e.startswith(f"Run {bad.name}:") and "results.json" in e for e in errors), errors
    if page == "pages/neurons.py":  # importance needs best.pt
        assert any("best.pt" in e and "Cannot compute neuron importance" in e for e in errors), errors
    assert all("\n" not in e for e in errors)
    at.selectbox(key=key).set_value(str(good)).run()
    s.no_exceptions(at)
    assert not any(bad.name in e for e in _errors(at))
