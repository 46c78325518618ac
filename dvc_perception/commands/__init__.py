# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Sub-commands of `dvc-perception`: each module has `add_arguments(parser)` and `run(args)`.

Modules here parse arguments and call into the library; they hold no algorithms.
"""
