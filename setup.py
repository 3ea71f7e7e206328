"""The one compiled part of stoke: the bilinear crop-resize-flip kernel (src/stoke/pipeline/_resample.c).

Everything else is declared in pyproject.toml. The extension is optional: where it cannot be built (no C
compiler), stoke resizes with OpenCV instead, within one grey level of the same pixels.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "stoke.pipeline._resample",
            ["src/stoke/pipeline/_resample.c"],
            extra_compile_args=["-O3", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        )
    ]
)
