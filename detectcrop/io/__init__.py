"""Reading and writing files safely: atomic writes, CSV manifests, image decoding, input discovery, output locks.

The package's own namespace holds the file primitives (`detectcrop.io.files`); images, inputs, input stamps, decode
budgets and locks are its submodules.
"""

from __future__ import annotations

from detectcrop.io.files import (
    FORMULA_TRIGGERS,
    OUTPUT_FULL_ERRNOS,
    TMP_SUFFIX,
    CsvManifest,
    OutputLocationError,
    OutputUnwritableError,
    UnsafePathError,
    atomic_write_bytes,
    atomic_write_text,
    complete_length,
    csv_safe,
    csv_text,
    csv_unsafe,
    inside,
    one_line,
    output_unwritable,
    prepare_output_dir,
    printable,
    read_csv,
    remove_stale_temporaries,
    repair_csv,
)

__all__ = [
    "FORMULA_TRIGGERS",
    "OUTPUT_FULL_ERRNOS",
    "TMP_SUFFIX",
    "CsvManifest",
    "OutputLocationError",
    "OutputUnwritableError",
    "UnsafePathError",
    "atomic_write_bytes",
    "atomic_write_text",
    "complete_length",
    "csv_safe",
    "csv_text",
    "csv_unsafe",
    "inside",
    "one_line",
    "output_unwritable",
    "prepare_output_dir",
    "printable",
    "read_csv",
    "remove_stale_temporaries",
    "repair_csv",
]
