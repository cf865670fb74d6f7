"""The `vq` command line."""
