"""The JSON report document, its schema, and the per-frame table writers."""

from __future__ import annotations

import json
import math

import jsonschema
import numpy as np
import pandas as pd
import pytest

from topiq_video.errors import InvalidInputError
from topiq_video.pooling import pool
from topiq_video.report import (
    SCHEMA_ID,
    build_report_document,
    load_schema,
    write_frames_csv,
    write_frames_table,
    write_report_json,
)
from topiq_video.scenes import Scene

FPS = 25.0
METRICS = [
    {"name": "psnr_y", "unit": "dB", "higher_is_better": True, "range": [0, None]},
    {"name": "ssim_y", "unit": None, "higher_is_better": True, "range": [0, 1]},
]


def make_frames(n: int = 240, seed: int = 0) -> pd.DataFrame:
    """Synthetic PSNR/SSIM-like scores with a quality dip, +inf, -inf and NaN values."""
    rng = np.random.default_rng(seed)
    frame = np.arange(n)
    time = frame / FPS
    scene = np.minimum(frame // 48, 4)
    dip = np.where(scene == 2, -6.0, 0.0) + np.where(frame % 48 == 0, -3.0, 0.0)
    psnr = 39.0 + dip + rng.normal(0, 0.8, n)
    ssim = np.clip(0.975 + dip / 60 + rng.normal(0, 0.004, n), 0, 1)
    psnr[:3] = np.inf  # identical frames at the start (a still title card)
    for i, arr, value in ((100, psnr, np.nan), (101, ssim, np.nan), (150, psnr, -np.inf)):
        if i < n:
            arr[i] = value
    return pd.DataFrame(
        {
            "frame": frame,
            "time": time,
            "ref_frame": frame + 2,
            "ref_time": (frame + 2) / FPS,
            "scene": scene,
            "psnr_y": psnr,
            "ssim_y": ssim,
        }
    )


def make_scenes(frames: pd.DataFrame) -> list[Scene]:
    scenes = []
    for i, part in frames.groupby("scene"):
        start, end = int(part["frame"].min()), int(part["frame"].max())
        scenes.append(Scene(int(i), start, end, start / FPS, (end + 1) / FPS))
    return scenes


def make_context(dist_path: str = "encode.mp4", title: str = "Sample") -> dict:
    probe = {
        "path": f"/videos/{dist_path}",
        "container": "mov,mp4,m4a,3gp,3g2,mj2",
        "codec": "h264",
        "width": 1280,
        "height": 720,
        "pix_fmt": "yuv420p",
        "fps": FPS,
        "duration": 9.6,
        "frame_count": 240,
        "color_primaries": "bt709",
        "metadata": {"title": title, "encoder": "Lavf61"},
    }
    ref = dict(probe, path="/videos/source.mov", codec="prores", metadata={})
    return {
        "inputs": {"dist": probe, "ref": ref},
        "model": None,
        "alignment": {
            "offset_frames": 2,
            "offset_seconds": 0.08,
            "confidence": 0.93,
            "matched": 240,
            "unmatched_dist": 0,
            "unmatched_ref": 2,
            "scaling": None,
            "warnings": ["reference has 2 extra leading frames"],
            "search": {
                "offsets": [o * 0.04 for o in range(-5, 6)],
                "costs": [abs(o - 2) + 1.0 for o in range(-5, 6)],
            },
        },
        "metrics": METRICS,
        "run": {
            "version": "0.1.0",
            "created": "2025-01-01T00:00:00Z",
            "command": ["topiq-video", "report", "encode.mp4", "--ref", "source.mov"],
            "duration_s": 1.5,
            "options": {"every": 1},
        },
    }


def make_doc(frames: pd.DataFrame | None = None, **context) -> dict:
    frames = make_frames() if frames is None else frames
    pooled = pool(frames, ["psnr_y", "ssim_y"], make_scenes(frames))
    ctx = make_context(**context)
    return build_report_document(frames, pooled, scene_source="reference", **ctx)


def _no_constants(name: str):
    raise AssertionError(f"non-standard JSON token {name}")


@pytest.fixture(scope="module")
def doc() -> dict:
    return make_doc()


def test_document_validates_against_schema(doc, tmp_path):
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    path = write_report_json(doc, tmp_path / "report.json")
    parsed = json.loads(path.read_text("utf-8"), parse_constant=_no_constants)
    jsonschema.validate(parsed, schema, cls=jsonschema.Draft202012Validator)
    assert parsed["schema"] == SCHEMA_ID
    assert len(parsed["frames"]) == 240
    assert [s["index"] for s in parsed["scenes"]] == [0, 1, 2, 3, 4]
    assert parsed["worst_scenes"]["psnr_y"][0] == 2  # the synthetic dip


def test_schema_rejects_broken_documents(doc):
    schema = load_schema()
    validator = jsonschema.Draft202012Validator(schema)
    bad_version = dict(doc, schema="topiq-video/report@2")
    missing = {k: v for k, v in doc.items() if k != "summary"}
    bad_frame = dict(doc, frames=[dict(doc["frames"][0], psnr_y_nonfinite="huge")])
    bad_stats = json.loads(json.dumps(doc))
    del bad_stats["summary"]["psnr_y"]["p1"]
    for broken in (bad_version, missing, bad_frame, bad_stats):
        assert not validator.is_valid(broken)


def test_nonfinite_values_become_null_with_flags(doc):
    frames = {f["frame"]: f for f in doc["frames"]}
    assert frames[0]["psnr_y"] is None and frames[0]["psnr_y_nonfinite"] == "+inf"
    assert frames[100]["psnr_y"] is None and frames[100]["psnr_y_nonfinite"] == "nan"
    assert frames[101]["ssim_y_nonfinite"] == "nan"
    assert frames[150]["psnr_y_nonfinite"] == "-inf"
    assert "psnr_y_nonfinite" not in frames[5] and math.isfinite(frames[5]["psnr_y"])
    assert frames[7]["ref_frame"] == 9 and frames[7]["scene"] == 0
    summary = doc["summary"]["psnr_y"]
    assert (summary["posinf_count"], summary["neginf_count"], summary["nan_count"]) == (3, 1, 1)
    assert summary["count"] == 240 - 5
    # The worst psnr frame is the -inf one: it must be listed, as null plus a flag.
    worst = doc["worst_frames"]["psnr_y"][0]
    assert worst["frame"] == 150 and worst["value"] is None
    assert worst["value_nonfinite"] == "-inf"
    text = json.dumps(doc, allow_nan=False)  # raises if any NaN/inf slipped through
    json.loads(text, parse_constant=_no_constants)


def test_summary_matches_frames(doc):
    values = np.array([f["psnr_y"] for f in doc["frames"] if f["psnr_y"] is not None], dtype=float)
    s = doc["summary"]["psnr_y"]
    assert s["mean"] == pytest.approx(values.mean(), rel=1e-12)
    assert s["p1"] == pytest.approx(np.percentile(values, 1), rel=1e-12)
    assert s["harmonic_mean"] is None  # PSNR is not in (0, 1]
    assert doc["summary"]["ssim_y"]["harmonic_mean"] is not None


def test_bad_scene_source_is_rejected():
    frames = make_frames(48)
    pooled = pool(frames, ["psnr_y"], make_scenes(frames))
    with pytest.raises(InvalidInputError, match="scene_source"):
        build_report_document(frames, pooled, scene_source="magic", **make_context())


def test_write_report_json_is_atomic(doc, tmp_path):
    target = tmp_path / "out" / "report.json"
    write_report_json(doc, target)
    with pytest.raises(ValueError):
        write_report_json({"x": float("nan")}, target)
    # The failed write left the previous file intact and no temp files behind.
    assert json.loads(target.read_text("utf-8"))["schema"] == SCHEMA_ID
    assert [p.name for p in target.parent.iterdir()] == ["report.json"]


def test_csv_round_trip_is_exact(tmp_path):
    frames = make_frames()
    frames.loc[7, "ssim_y"] = 1 / 3  # needs all 17 significant digits
    path = write_frames_csv(frames, tmp_path / "frames.csv")
    text = path.read_text("utf-8")
    assert ",inf," in text and "-inf" in text
    back = pd.read_csv(path)
    assert list(back.columns) == list(frames.columns)
    assert back["psnr_y"].isna().sum() == 1 and np.isposinf(back["psnr_y"]).sum() == 3
    for col in frames.columns:
        np.testing.assert_array_equal(back[col].to_numpy(), frames[col].to_numpy())


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".json"])
def test_frames_table_round_trip(tmp_path, suffix):
    frames = make_frames(60)
    path = write_frames_table(frames, tmp_path / f"frames{suffix}")
    if suffix == ".json":
        records = json.loads(path.read_text("utf-8"), parse_constant=_no_constants)
        assert records[0]["psnr_y"] is None and records[0]["psnr_y_nonfinite"] == "+inf"
        back = pd.DataFrame(records)
        flags = back.pop("psnr_y_nonfinite")
        back["psnr_y"] = np.where(flags == "+inf", np.inf, back["psnr_y"].astype(float))
        back = back[frames.columns]
    elif suffix == ".parquet":
        back = pd.read_parquet(path)
    else:
        back = pd.read_csv(path)
    for col in frames.columns:
        np.testing.assert_array_equal(
            back[col].to_numpy(dtype=float), frames[col].to_numpy(dtype=float)
        )


def test_unknown_table_suffix_is_rejected(tmp_path):
    with pytest.raises(InvalidInputError, match=r"\.csv"):
        write_frames_table(make_frames(5), tmp_path / "frames.xlsx")
