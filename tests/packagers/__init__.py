"""Real DASH packagers driven in real time for the packager test matrix.

``harness`` holds what every case shares (the source clip, the logged static server, the
programs, the recorder run, the packager-output watcher); ``ffmpeg_dash``, ``nginx_rtmp`` and
``shaka`` each describe one packager's cases.
"""
