"""``python -m topiq_video``: the same command line as ``topiq-video``."""

from topiq_video.cli import main

if __name__ == "__main__":
    main()
