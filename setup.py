"""The compiled parts of stoke, all optional: where they cannot be built (no C compiler) stoke installs and
works all the same.

- src/stoke/pipeline/_resample.c: the bilinear crop-resize-flip kernel; without it stoke resizes with
  OpenCV, within one grey level of the same pixels.
- src/stoke/pipeline/_tokens.c: the token-block gather (TokenBlocks rows straight from the mapped shards,
  the GIL released); without it stoke fills each row with numpy, the same arrays at a fraction of the speed.
- src/stoke/format/_mapguard.c: the SIGBUS guard for memory-mapped shards (a shard truncated while in use
  becomes an error naming it, not a dead process); without it stoke checks each shard's size before each
  read instead, which leaves a truncation racing the read itself (docs/guarantees.md).

Everything else is declared in pyproject.toml.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "stoke.pipeline._resample",
            ["src/stoke/pipeline/_resample.c"],
            extra_compile_args=["-O3", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        ),
        Extension(
            "stoke.pipeline._tokens",
            ["src/stoke/pipeline/_tokens.c"],
            extra_compile_args=["-O3", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        ),
        Extension(
            "stoke.format._mapguard",
            ["src/stoke/format/_mapguard.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        ),
    ]
)
