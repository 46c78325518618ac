# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""What `make demo` runs: the chessboard PnP comparison and the sample bag jobs.

- `chessboard`: chessboard views (real or rendered) solved by `solve_pnp` next to OpenCV.
- `boards`: rendered views of fiducial boards with a known pose (tests, benchmarks, samples).
- `samples`: the board and demo-object sample bags -> replay -> eval -> report.
"""
