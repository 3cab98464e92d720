"""The results format, owned in one place: schema version and statuses, the strict-JSON row encoder,
the fsynced append writer, the one reader every command uses, and the claim on a results folder.

A results file is JSON lines, one row per finished point. Writers emit strict JSON (non-finite numbers
become null, recorded in a `nonfinite` object beside them); the reader skips, with a warning, any line
that is not a row (a write cut short by a crash, wherever it now sits), and refuses a file with no row.
"""

from .encode import encode_row, restore_nonfinite
from .folder import RESULTS_FILE, check_out_folder, claim_folder
from .reader import finished_point_ids, read_numbered, read_rows
from .schema import FINAL_STATUSES, NONFINITE_KEY, OK, SCHEMA_VERSION
from .writer import append_row

__all__ = [
    "FINAL_STATUSES", "NONFINITE_KEY", "OK", "RESULTS_FILE", "SCHEMA_VERSION", "append_row",
    "check_out_folder", "claim_folder", "encode_row", "finished_point_ids", "read_numbered", "read_rows",
    "restore_nonfinite",
]
