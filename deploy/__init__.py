"""Local stack launcher (`tao up`), the `tao` command line, and production deploy files."""
