"""studyman.synthetic."""
