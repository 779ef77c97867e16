"""Ray Tune trainables around the superpos training loop."""
