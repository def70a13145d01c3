"""DePU's benchmarks: each module prints a table comparing DePU with the reference tool in the same run."""
