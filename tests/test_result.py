"""The typed result: its generated schema, its files, and loading them back."""

from __future__ import annotations

import json
from dataclasses import replace

import jsonschema
import numpy as np
import pandas as pd
import pytest
from synthetic import make_result

from topiq_video.errors import InvalidInputError
from topiq_video.report.tables import write_frames_table
from topiq_video.result import (
    SCHEMA_ID,
    Interruption,
    ScoreResult,
    dumps_report,
    load_report,
    report_schema,
    shipped_schema,
)


def _no_constants(name: str):
    raise AssertionError(f"non-standard JSON token {name}")


def test_shipped_schema_is_the_generated_one():
    """Refresh with: python -c "from topiq_video.result import write_schemas;
    write_schemas('topiq_video/schemas')" """
    assert shipped_schema() == report_schema()


def test_saved_report_validates_and_is_strict_json(tmp_path):
    result = make_result(n_frames=120)
    saved = result.save(tmp_path)
    text = saved.json_path.read_text("utf-8")
    doc = json.loads(text, parse_constant=_no_constants)
    jsonschema.validate(doc, shipped_schema())
    assert doc["schema"] == SCHEMA_ID
    assert doc["frames"]["file"] == "frames.parquet" and doc["frames"]["count"] == 120
    assert "frame" not in text[:200]  # no per-frame rows in the JSON itself


def test_save_then_load_gives_an_equal_result(tmp_path):
    result = make_result(
        n_frames=200,
        interruption=Interruption("error", "decoder failed", 200, 7.96, 300),
        warnings=("one", "two"),
    )
    result.save(tmp_path)
    back = ScoreResult.load(tmp_path / "report.json")
    assert back == result
    assert back.report.interruption == result.report.interruption
    assert ScoreResult.load(tmp_path) == result  # the folder works too
    changed = ScoreResult(result.report, result.frames.assign(psnr_y=0.0), result.images)
    assert changed != result


def test_nonfinite_worst_values_keep_their_flag(tmp_path):
    values = np.full(60, np.inf)
    values[10] = 30.0
    result = make_result(n_frames=60, metrics=("psnr_y",), values={"psnr_y": values})
    result.save(tmp_path)
    doc = json.loads((tmp_path / "report.json").read_text(), parse_constant=_no_constants)
    worst = doc["worst_frames"]["psnr_y"]
    assert worst[0] == {"frame": 10, "time": pytest.approx(0.4), "value": 30.0,
                        "value_nonfinite": None}  # fmt: skip
    assert worst[1]["value"] is None and worst[1]["value_nonfinite"] == "+inf"
    back = ScoreResult.load(tmp_path)
    assert back.report.worst_frames["psnr_y"][1].number == np.inf
    assert np.isposinf(back.frames["psnr_y"]).sum() == 59


def test_summary_matches_the_frames(tmp_path):
    result = make_result(n_frames=240)
    for metric, stats in result.summary.items():
        values = result.frames[metric].to_numpy()
        finite = values[np.isfinite(values)]
        assert stats.count == finite.size
        assert stats.mean == pytest.approx(finite.mean(), rel=1e-12)
        assert stats.p5 == pytest.approx(np.percentile(finite, 5), rel=1e-12)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d.update(schema="topiq-video/report@1"), "not a topiq-video/report@2"),
        (lambda d: d["summary"]["psnr_y"].update(count="many"), "does not match"),
        (lambda d: d["frames"].update(file="../../etc/passwd"), "tampered"),
        (lambda d: d["gallery"][0].update(dist_image="/etc/passwd"), "tampered"),
    ],
)
def test_tampered_or_foreign_reports_are_refused(tmp_path, edit, match):
    result = make_result(n_frames=60)
    result.save(tmp_path)
    path = tmp_path / "report.json"
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(InvalidInputError, match=match):
        ScoreResult.load(path)


def test_non_json_and_huge_files_are_refused(tmp_path):
    bad = tmp_path / "report.json"
    bad.write_bytes(b"\x00\xff not json")
    with pytest.raises(InvalidInputError, match="not JSON"):
        load_report(bad)
    with pytest.raises(InvalidInputError, match="Cannot read"):
        load_report(tmp_path / "missing.json")


def test_untrusted_text_round_trips_unchanged(tmp_path):
    evil = "<script>alert(1)</script>\u2028\U0001f600"
    result = make_result(n_frames=30, title=evil, warnings=(evil,))
    result.save(tmp_path)
    back = ScoreResult.load(tmp_path)
    assert back.report.inputs["dist"].metadata["title"] == evil
    assert back.warnings == (evil,)


def test_json_text_is_the_report(tmp_path):
    result = make_result(n_frames=30)
    text = dumps_report(result.report)
    assert json.loads(text)["run"]["options"]["selection"]["every"] == 1
    assert replace(result.report, warnings=("x",)) != result.report


def _table() -> pd.DataFrame:
    frames = make_result(n_frames=40, values={"psnr_y": np.r_[np.inf, np.arange(39.0)]}).frames
    frames.loc[7, "ssim_y"] = 1 / 3  # needs all 17 significant digits
    frames.loc[8, "psnr_y"] = np.nan
    frames.loc[9, "psnr_y"] = -np.inf
    return frames


def test_csv_round_trip_is_exact(tmp_path):
    frames = _table()
    path = write_frames_table(frames, tmp_path / "frames.csv")
    text = path.read_text("utf-8")
    assert ",inf," in text and "-inf" in text
    back = pd.read_csv(path)
    assert list(back.columns) == list(frames.columns)
    for col in frames.columns:
        np.testing.assert_array_equal(
            back[col].to_numpy(dtype=float), frames[col].to_numpy(dtype=float)
        )


@pytest.mark.parametrize("suffix", [".parquet", ".json"])
def test_frames_table_round_trip(tmp_path, suffix):
    frames = _table()
    path = write_frames_table(frames, tmp_path / f"frames{suffix}")
    if suffix == ".json":
        records = json.loads(path.read_text("utf-8"), parse_constant=_no_constants)
        assert records[0]["psnr_y"] is None and records[0]["psnr_y_nonfinite"] == "+inf"
        assert records[8]["psnr_y_nonfinite"] == "nan" and records[9]["psnr_y_nonfinite"] == "-inf"
        back = pd.DataFrame(records)
        flags = back.pop("psnr_y_nonfinite")
        special = {"+inf": np.inf, "-inf": -np.inf, "nan": np.nan}
        back["psnr_y"] = [
            special[f] if isinstance(f, str) else v
            for f, v in zip(flags, back["psnr_y"], strict=True)
        ]
        back = back[frames.columns]
    else:
        back = pd.read_parquet(path)
    for col in frames.columns:
        np.testing.assert_array_equal(
            back[col].to_numpy(dtype=float), frames[col].to_numpy(dtype=float)
        )


def test_unknown_table_suffix_is_rejected(tmp_path):
    with pytest.raises(InvalidInputError, match=r"\.csv"):
        write_frames_table(_table(), tmp_path / "frames.xlsx")
