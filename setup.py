"""Package layout of the wheel (the metadata is in pyproject.toml).

The reference study (``protocols/``) and its analysis plan and lock (``analysis/``) stay at the
repository root, where a trial team edits them. The wheel carries them as package data under
``studyman/_reference/`` (the same layout as in the repository), mapped with ``package_dir``
onto the root folders, so nothing is copied in git: ``studyman.protocol.reference`` finds them
there in an installed package and at the repository root in a checkout or an editable install.
``pyproject.toml`` cannot add mapped packages to a package search, hence this file.
"""

from setuptools import find_namespace_packages, setup

REFERENCE = {
    "studyman._reference.protocols": "protocols",
    "studyman._reference.analysis": "analysis",
}

setup(
    packages=[
        *find_namespace_packages(include=["studyman*"], exclude=["*.__pycache__"]),
        *REFERENCE,
    ],
    package_dir=REFERENCE,
    package_data={
        "studyman": ["py.typed", "data/**/*", "reporting/templates/*"],
        **{package: ["**/*"] for package in REFERENCE},
    },
    exclude_package_data={package: ["**/__pycache__/*", "**/*.pyc"] for package in REFERENCE},
)
