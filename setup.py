"""Builds emergence_fast._C: the CPU ops always, the CUDA ops when torch has CUDA and nvcc exists.

Set EMERGENCE_FAST_NO_EXT=1 to skip the native build (the pure-torch path still works). Without torch in
the build environment -- plain `pip install .`, whose isolated build deliberately lacks torch (see
pyproject.toml) -- the package is built without the native ops and says so; `pip install
--no-build-isolation .` after torch is installed builds them.
"""
import glob
import os
import shutil
import sys

from setuptools import find_packages, setup

# Every sub-package of emergence_fast (a wheel once shipped without icl/ and mirage/), plus kernels/ mapped in.
PACKAGES = ["emergence_fast"] + [f"emergence_fast.{name}" for name in find_packages("emergence_fast")] + [
    "emergence_fast.kernels"]
PACKAGE_DIR = {"emergence_fast.kernels": "kernels"}


def _extensions():
    if os.environ.get("EMERGENCE_FAST_NO_EXT") == "1":
        return [], {}
    try:
        import torch
    except ImportError:
        print("emergence_fast: torch is not importable in this build environment, so the native ops (_C) are not "
              "built and the pure-torch path will serve every op. For the native ops: pip install torch, then "
              "pip install --no-build-isolation .", file=sys.stderr)
        return [], {}
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    sources = ["csrc/bindings.cpp"] + sorted(glob.glob("csrc/cpu/*.cpp"))
    cxx_flags = ["-O3", "-std=c++17", "-fopenmp"]
    with_cuda = torch.version.cuda is not None and shutil.which("nvcc") is not None
    if with_cuda:
        sources += sorted(glob.glob("csrc/cuda/*.cu"))
        ext = CUDAExtension(
            "emergence_fast._C",
            sources,
            define_macros=[("WITH_CUDA", None)],
            extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "-std=c++17"]},
            extra_link_args=["-fopenmp"],
        )
    else:
        ext = CppExtension("emergence_fast._C", sources, extra_compile_args=cxx_flags, extra_link_args=["-fopenmp"])
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions()
setup(
    packages=PACKAGES,
    package_dir=PACKAGE_DIR,
    package_data={"emergence_fast": ["data/*.txt"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
