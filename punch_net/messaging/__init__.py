"""The JSON command protocol `/punch/cmd/1.0.0`: codec, handlers, trio adapter."""
