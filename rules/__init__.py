"""skipwatch domain core: pure, no IO, time is a parameter."""
