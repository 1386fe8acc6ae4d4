"""studyman.sources."""
