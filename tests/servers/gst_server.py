"""GStreamer stream servers for tests; run by ``/usr/bin/python3`` (Debian's python3-gi).

``gst_server.py rtsp --port P``: an RTSP server (gst-rtsp-server) at rtsp://127.0.0.1:P/test
serving a live moving test pattern as H.264 (x264), optionally with an AAC tone, or an
MPEG-TS file in a loop. ``gst_server.py srt --port P``: an SRT listener sending the same
picture as MPEG-TS to every caller. ``gst_server.py srt-relay --uri srt://...``: copy what an SRT caller receives to standard
output (a relay for PyAV, which has no SRT). ``gst_server.py --check``: exit 0 when every element
needed is installed, else print what is missing.

The servers print ``READY <port>`` once serving (or ``ERROR cannot listen ...``), and exits on
SIGTERM/SIGINT or when standard input closes, i.e. when the test process that started it
is gone: it never outlives the tests.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

NEEDED = {
    "rtsp": ["videotestsrc", "videoconvert", "x264enc", "rtph264pay", "audiotestsrc",
             "audioconvert", "audioresample", "voaacenc", "rtpmp4gpay", "multifilesrc",
             "tsdemux", "h264parse"],
    "srt": ["mpegtsmux", "aacparse", "srtsink", "srtsrc", "fdsink"],
}  # fmt: skip
PACKAGES = (
    "python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base "
    "gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly gstreamer1.0-plugins-bad"
)


def load_gi():
    """Import GStreamer through gi; SystemExit with the packages to install if missing."""
    try:
        import gi

        gi.require_version("Gst", "1.0")
        gi.require_version("GstRtspServer", "1.0")
        from gi.repository import GLib, Gst, GstRtspServer
    except (ImportError, ValueError) as exc:
        raise SystemExit(
            f"GStreamer RTSP server not importable ({exc}); apt install {PACKAGES}"
        ) from None
    Gst.init(None)
    return GLib, Gst, GstRtspServer


def video_chain(args: argparse.Namespace) -> str:
    """Live moving test pattern to H.264 (byte-stream, SPS/PPS at every keyframe)."""
    # tune=zerolatency: no B-frames or lookahead, each frame leaves the encoder at once;
    # key-int-max: a client joining mid-stream waits at most one GOP for a picture.
    return (
        f"videotestsrc is-live=true pattern={args.pattern} horizontal-speed={args.speed} "
        f"! video/x-raw,width={args.width},height={args.height},framerate={args.fps}/1 "
        f"! videoconvert ! x264enc tune=zerolatency speed-preset=ultrafast threads=1 "
        f"bitrate={args.bitrate} key-int-max={args.gop} "
        f"! video/x-h264,profile=constrained-baseline"
    )


def audio_chain(args: argparse.Namespace) -> str:
    """Live sine tone to AAC."""
    return (
        f"audiotestsrc is-live=true wave=sine freq={args.tone} volume=0.3 "
        f"! audioconvert ! audioresample ! audio/x-raw,rate=48000,channels=2 "
        f"! voaacenc bitrate=64000"
    )


def rtsp_launch(args: argparse.Namespace) -> str:
    if args.file:
        # multifilesrc re-reads the file at its end; tsdemux sees a timestamp wrap and
        # carries on, so the stream never ends.
        return (
            f"( multifilesrc location={args.file} loop=true ! tsdemux "
            f"! h264parse config-interval=-1 ! rtph264pay name=pay0 pt=96 )"
        )
    launch = f"( {video_chain(args)} ! rtph264pay name=pay0 pt=96 config-interval=-1"
    if args.audio:
        launch += f" {audio_chain(args)} ! rtpmp4gpay name=pay1 pt=97"
    return launch + " )"


def serve_rtsp(args: argparse.Namespace, GLib, Gst, GstRtspServer) -> object | None:  # noqa: N803
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(rtsp_launch(args))
    factory.set_shared(args.shared)
    server.get_mount_points().add_factory(args.mount, factory)
    if server.attach(None) == 0:
        return None
    return server


def serve_srt(args: argparse.Namespace, GLib, Gst, GstRtspServer) -> object | None:  # noqa: N803
    launch = f"{video_chain(args)} ! h264parse ! mux. "
    if args.audio:
        launch += f"{audio_chain(args)} ! aacparse ! mux. "
    uri = f"srt://127.0.0.1:{args.port}?mode=listener"
    launch += (
        f"mpegtsmux name=mux alignment=7 "
        f"! srtsink uri={uri} latency={args.latency} wait-for-connection=false sync=false"
    )
    pipeline = Gst.parse_launch(launch)
    if pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
        pipeline.set_state(Gst.State.NULL)
        return None
    # Wait for the state change so that the listener socket is bound when READY is printed.
    pipeline.get_state(5 * Gst.SECOND)
    return pipeline


def relay_srt(uri: str, GLib, Gst) -> int:  # noqa: N803
    """Copy the MPEG-TS an SRT caller receives to standard output until the stream ends."""
    pipeline = Gst.parse_launch(f'srtsrc uri="{uri}" auto-reconnect=false ! fdsink fd=1 sync=false')
    loop = GLib.MainLoop()
    status = {"rc": 0}

    def on_message(_bus: object, message: object) -> None:
        if message.type == Gst.MessageType.ERROR:
            err, _debug = message.parse_error()
            print(f"relay error: {err.message}", file=sys.stderr, flush=True)
            status["rc"] = 1
        loop.quit()

    bus = pipeline.get_bus()
    bus.add_signal_watch()
    bus.connect("message::eos", on_message)
    bus.connect("message::error", on_message)
    watch_parent(GLib, loop)
    pipeline.set_state(Gst.State.PLAYING)
    loop.run()
    pipeline.set_state(Gst.State.NULL)
    return status["rc"]


def watch_parent(GLib, loop) -> None:  # noqa: N803
    """Quit the loop on SIGTERM/SIGINT or when standard input closes (the parent is gone)."""

    def quit_loop(*_args: object) -> bool:
        loop.quit()
        return False

    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, sig, quit_loop)
    GLib.io_add_watch(
        GLib.IOChannel.unix_new(sys.stdin.fileno()),
        GLib.PRIORITY_DEFAULT,
        GLib.IOCondition.IN | GLib.IOCondition.HUP | GLib.IOCondition.ERR,
        quit_loop,
    )


def check() -> int:
    _, Gst, _ = load_gi()
    missing = [e for names in NEEDED.values() for e in names if Gst.ElementFactory.find(e) is None]
    if missing:
        print(f"GStreamer elements missing: {' '.join(missing)}; apt install {PACKAGES}")
        return 1
    print("ok")
    return 0


def main() -> int:
    if sys.argv[1:] == ["--check"]:
        return check()
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["rtsp", "srt", "srt-relay"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--uri", default="", help="srt-relay: the srt:// URI to read")
    parser.add_argument("--mount", default="/test")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=180)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--bitrate", type=int, default=600, help="kbit/s")
    parser.add_argument("--gop", type=int, default=25)
    parser.add_argument("--pattern", default="smpte")
    parser.add_argument("--speed", type=int, default=4, help="pixels the pattern scrolls a frame")
    parser.add_argument("--audio", action="store_true")
    parser.add_argument("--tone", type=float, default=440.0)
    parser.add_argument("--file", default=None)
    parser.add_argument("--shared", action="store_true")
    parser.add_argument("--latency", type=int, default=120, help="SRT latency, ms")
    args = parser.parse_args()

    GLib, Gst, GstRtspServer = load_gi()  # noqa: N806
    if args.kind == "srt-relay":
        return relay_srt(args.uri, GLib, Gst)
    serve = serve_rtsp if args.kind == "rtsp" else serve_srt
    handle = serve(args, GLib, Gst, GstRtspServer)
    if handle is None:
        print(f"ERROR cannot listen on 127.0.0.1:{args.port}", flush=True)
        return 1

    loop = GLib.MainLoop()
    watch_parent(GLib, loop)
    print(f"READY {args.port}", flush=True)
    loop.run()
    if isinstance(handle, Gst.Pipeline):
        # srtsink sends SRT's shutdown on close; without it callers wait out a peer timeout.
        handle.set_state(Gst.State.NULL)
    # Exiting closes every RTSP client socket: clients see the connection end.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
