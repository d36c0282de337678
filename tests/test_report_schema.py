"""``report/schema.py``: the one reader of results.csv. A file written by ``ResultsStore``
reads back with its JSON columns and its ``converged`` flags intact, whatever dtype pandas
picked for them."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import results_row

from poisonprobe.errors import ConfigError
from poisonprobe.experiment.results import ResultsStore
from poisonprobe.report.schema import JSON_COLUMNS, flags, json_cell, read_results


def _row(attack: str, converged: object, info: dict) -> dict:
    return results_row(
        attack=attack,
        converged=converged,
        stages=json.dumps({"total": 1.5}),
        info=json.dumps(info),
        cell_id=attack,
    )


def test_a_written_file_reads_back_through_the_schema(tmp_path):
    store = ResultsStore(tmp_path / "results.csv")
    store.append(_row("tgda", True, {"objective_trace": [1.0, 0.5], "converged": True}))
    store.append(_row("gc-input", False, {"steps_run": 7}))
    store.append(_row("label-flip", "", {}))  # not iterative: no flag
    df = read_results(store.path)
    assert [json_cell(v) for v in df["info"]] == [
        {"objective_trace": [1.0, 0.5], "converged": True},
        {"steps_run": 7},
        {},
    ]
    assert json_cell(df["stages"].iloc[0]) == {"total": 1.5}
    assert set(JSON_COLUMNS) <= set(df.columns)
    assert flags(df["converged"]).tolist() == [True, False, pd.NA]


@pytest.mark.parametrize(
    "value, expected",
    [(float("nan"), {}), ("", {}), ("{not json", {}), ("[1, 2]", {}), ('{"a": 1}', {"a": 1})],
)
def test_json_cell_reads_only_json_objects(value, expected):
    assert json_cell(value) == expected


def test_flags_reads_every_dtype_pandas_may_choose():
    as_bool = pd.Series([True, False])
    as_text = pd.Series(["True", "false", None])
    as_float = pd.Series([1.0, 0.0, float("nan")])
    assert flags(as_bool).tolist() == [True, False]
    assert flags(as_text).tolist() == [True, False, pd.NA]
    assert flags(as_float).tolist() == [True, False, pd.NA]


def test_a_file_that_is_not_a_results_table_is_refused(tmp_path):
    bad = tmp_path / "results.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ConfigError, match="lacks the column"):
        read_results(bad)


def test_the_convergence_table_flags_runs_that_stopped_still_rising(tmp_path):
    """``still_rising`` comes from each row's ``info`` (missing in old files: False)."""
    from poisonprobe.report.markdown import convergence_section

    store = ResultsStore(tmp_path / "results.csv")
    for attack, rising in [("tgda", True), ("tgda-feature", False), ("emn", None)]:
        info = {} if rising is None else {"still_rising": rising}
        row = _row(attack, True, info)
        row.update(attack_steps=40, attack_objective=0.5)
        store.append(row)
    lines = "\n".join(convergence_section(read_results(store.path))).splitlines()
    header = next(line for line in lines if line.startswith("| setting"))
    col = header.split(" | ").index("still_rising")
    rows = {r.split(" | ")[1]: r.split(" | ")[col] for r in lines if r.startswith("| s |")}
    assert rows == {"tgda": "True", "tgda-feature": "False", "emn": "False"}
    from poisonprobe.report.markdown import understated_note

    df = read_results(store.path)
    assert understated_note(df) == (
        "note: of 3 iterative rows, 0 hit their max_steps cap and 1 stopped still climbing "
        "(still_rising): their drops are lower bounds (report.md, Convergence; a smaller tol "
        "or larger max_steps goes further)"
    )
    df.loc[df["attack"] == "emn", "converged"] = False
    assert understated_note(df).startswith("note: of 3 iterative rows, 1 hit their max_steps")
    assert understated_note(df[df["attack"] == "tgda-feature"]) is None
    assert "never_improved" not in header  # the column only where a row is flagged


def test_rows_that_never_beat_their_start_are_counted_and_shown(tmp_path):
    """``never_improved`` (from ``info``) adds its clause to the console note and its column
    to the convergence table, both only when some row carries it."""
    from poisonprobe.report.markdown import convergence_section, understated_note

    store = ResultsStore(tmp_path / "results.csv")
    for attack, stalled in [("tgda", True), ("tgda-feature", False)]:
        row = _row(attack, True, {"never_improved": stalled, "still_rising": False})
        row.update(attack_steps=16, attack_objective=0.05)
        store.append(row)
    df = read_results(store.path)
    assert understated_note(df) == (
        "note: of 2 iterative rows, 0 hit their max_steps cap, 0 stopped still climbing "
        "(still_rising), 1 never improved on their start (never_improved): their drops are "
        "lower bounds (report.md, Convergence; a smaller tol or larger max_steps goes further)"
    )
    lines = "\n".join(convergence_section(df)).splitlines()
    header = next(line for line in lines if line.startswith("| setting"))
    col = header.split(" | ").index("never_improved")
    rows = {r.split(" | ")[1]: r.split(" | ")[col] for r in lines if r.startswith("| s |")}
    assert rows == {"tgda": "True", "tgda-feature": "False"}
