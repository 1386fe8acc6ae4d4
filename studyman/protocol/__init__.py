"""studyman.protocol."""
