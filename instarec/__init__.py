"""instarec: record MPEG-DASH livestreams from their very beginning."""

__version__ = "2.0.0.dev0"
