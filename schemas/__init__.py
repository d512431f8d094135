"""The contracts every layer shares: StructTypes of each table, every reason code, winnow's version.

The version lives here, in the package every other imports, so the fetcher's
User-Agent (udfs), the reports and manifests (jobs) and the package metadata
(pyproject.toml reads it) name one number.
"""

__version__ = "0.1.0"
