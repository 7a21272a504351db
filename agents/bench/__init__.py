"""The bench that runs and judges: the guard before any GPU time, the runner, and the keep rule."""
